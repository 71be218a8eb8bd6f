package main

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/msrpscope/msrpscope/hep/hepsink"
	"github.com/msrpscope/msrpscope/tracer"
	"github.com/msrpscope/msrpscope/tracer/pcap/pcapsink"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// The sink kinds this program offers, by their "type" key.
func init() {
	sink.Register("hep", hepsink.Kind{})
	sink.Register("pcap", pcapsink.Kind{})
}

// sinkBlock is one entry of the "sinks" key: the common keys type and queue,
// and the rest, which the sink kind decodes itself (tracer.SinkConfig.Decode).
type sinkBlock struct {
	Type  string
	Queue int
	rest  *yaml.Node // a mapping without type and queue
}

func (b *sinkBlock) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a sink is a mapping of keys", n.Line)
	}
	*b = sinkBlock{rest: &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "type":
			err = v.Decode(&b.Type)
		case "queue":
			err = v.Decode(&b.Queue)
		default:
			b.rest.Content = append(b.rest.Content, k, v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// decode fills v (a pointer to the kind's configuration struct) from the
// block's own keys; a key v has no field for is an error naming its line.
func (b *sinkBlock) decode(v any) error {
	if b.rest == nil {
		return nil
	}
	known := yamlKeys(reflect.TypeOf(v))
	for i := 0; i+1 < len(b.rest.Content); i += 2 {
		k := b.rest.Content[i]
		if known != nil && !known[k.Value] {
			return fmt.Errorf("line %d: field %s not found in a sink of type %s", k.Line, k.Value, b.Type)
		}
	}
	return b.rest.Decode(v)
}

// yamlKeys returns the keys a struct (or pointer to one) decodes; nil when
// t is not a struct.
func yamlKeys(t reflect.Type) map[string]bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	keys := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys[name] = true
	}
	return keys
}

func (fc *fileConfig) tracerConfig() tracer.Config {
	tc := fc.Tracing
	tc.Sinks = make(map[string]tracer.SinkConfig, len(fc.Sinks))
	for name, b := range fc.Sinks {
		tc.Sinks[name] = tracer.SinkConfig{Type: b.Type, Queue: b.Queue, Decode: b.decode}
	}
	return tc
}
