package tracer

import (
	"errors"
	"fmt"
)

// Config is the tracing part of msrpscope's configuration: the keys
// tracing.enabled, tracing.rules and sinks. docs/CONFIG.md lists them.
type Config struct {
	Enabled bool                  `yaml:"enabled"` // state of the runtime switch at start (and on reload, unless switched at run time)
	Rules   []Rule                `yaml:"rules"`
	Sinks   map[string]SinkConfig `yaml:"-"` // the top-level "sinks" key
}

// Rule sends what its expression matches to sinks.
type Rule struct {
	Name   string   `yaml:"name"`
	Match  string   `yaml:"match"`  // filter expression (package filters); "" matches everything
	Events bool     `yaml:"events"` // connection events
	Frames bool     `yaml:"frames"` // MSRP frames
	To     []string `yaml:"to"`     // sink names
}

// SinkConfig is one destination of traces as the tracer sees it: the keys
// common to every kind, and a function that decodes the kind's own keys.
// The tracer never interprets those: it hands Decode to the factory
// registered for Type (package tracer/sink).
type SinkConfig struct {
	Type  string // the sink kind's registered type name
	Queue int    // records that may wait for the sink; when full, new ones are dropped and counted. 0: sink.DefaultQueueSize
	// Decode fills a value from the sink's configuration block without the
	// keys type and queue, the way json.Unmarshal does, and fails on keys
	// the value has no field for. nil decodes nothing (every key zero).
	Decode func(v any) error
}

// ErrConfig is wrapped by every tracing configuration error.
var ErrConfig = errors.New("tracer: bad configuration")

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}
