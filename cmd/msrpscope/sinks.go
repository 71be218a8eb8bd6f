package main

import (
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	"github.com/msrpscope/msrpscope/hep/hepsink"
	"github.com/msrpscope/msrpscope/internal/recent"
	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/tracer"
	"github.com/msrpscope/msrpscope/tracer/pcap/pcapsink"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// recentRings are the rings the "recent" sinks keep, which the web view
// reads (every run of this process shares it; session ids are unique).
var recentRings = recent.NewStore()

// The sink kinds this program offers, by their "type" key.
func init() {
	sink.Register("recent", recent.Kind{Store: recentRings})
	sink.Register("hep", hepsink.Kind{})
	sink.Register("pcap", pcapsink.Kind{})
	sink.Register("clickhouse", storage.Kind{})
}

// sinkMap is the "sinks" key. A sink the file names replaces the embedded
// default's sink of that name whole; the default's other sinks stay.
type sinkMap map[string]*sinkBlock

// sinkBlock is one entry of the "sinks" key: the common keys type and queue,
// and the rest, which the sink kind decodes itself (tracer.SinkConfig.Decode).
type sinkBlock struct {
	Type  string
	Queue int
	rest  *ast.MappingNode // the block without type and queue
}

func (m *sinkMap) UnmarshalYAML(n ast.Node) error {
	if _, null := n.(*ast.NullNode); null {
		return nil
	}
	mn, ok := n.(*ast.MappingNode)
	if !ok {
		return yamlErrorAt(n, "sinks is a mapping of sink names to sinks")
	}
	if *m == nil {
		*m = sinkMap{}
	}
	for _, kv := range mn.Values {
		name := kv.Key.GetToken().Value
		b, err := newSinkBlock(name, kv.Value)
		if err != nil {
			return err
		}
		(*m)[name] = b
	}
	return nil
}

func newSinkBlock(name string, n ast.Node) (*sinkBlock, error) {
	mn, ok := n.(*ast.MappingNode)
	if !ok {
		return nil, yamlErrorAt(n, "sink %q is a mapping of keys", name)
	}
	rest := *mn
	rest.Values = nil
	b := &sinkBlock{rest: &rest}
	for _, kv := range mn.Values {
		var err error
		switch kv.Key.GetToken().Value {
		case "type":
			err = yaml.NodeToValue(kv.Value, &b.Type, yaml.Strict())
		case "queue":
			err = yaml.NodeToValue(kv.Value, &b.Queue, yaml.Strict())
		default:
			rest.Values = append(rest.Values, kv)
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// decode fills v (a pointer to the kind's configuration struct) from the
// block's own keys; a key v has no field for is an error naming its line.
func (b *sinkBlock) decode(v any) error {
	if b.rest == nil || len(b.rest.Values) == 0 {
		return nil
	}
	if err := yaml.NodeToValue(b.rest, v, yaml.Strict(), yaml.CustomUnmarshaler[time.Duration](unmarshalDuration)); err != nil {
		return yamlError(nil, b.rest, err)
	}
	return nil
}

func (fc *fileConfig) tracerConfig() tracer.Config {
	tc := fc.Tracing
	tc.Sinks = make(map[string]tracer.SinkConfig, len(fc.Sinks))
	for name, b := range fc.Sinks {
		tc.Sinks[name] = tracer.SinkConfig{Type: b.Type, Queue: b.Queue, Decode: b.decode}
	}
	return tc
}
