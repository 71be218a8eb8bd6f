package main

import (
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/tracer"
)

//go:embed default.yaml
var defaultYAML []byte

// fileConfig is the YAML configuration file.
type fileConfig struct {
	Listen  []relay.Listen `yaml:"listen"`
	Relay   relaySection   `yaml:"relay"`
	Tracing tracer.Config  `yaml:"tracing"`
	Sinks   sinkMap        `yaml:"sinks"`
	Log     logSection     `yaml:"log"`
	Admin   adminSection   `yaml:"admin"`
	Metrics metricsSection `yaml:"metrics"`
}

type relaySection struct {
	URIs              []string       `yaml:"uris"`
	Auth              relay.Auth     `yaml:"auth"`
	Limits            relay.Limits   `yaml:"limits"`
	Outbound          relay.Outbound `yaml:"outbound"`
	TraceCaptureBytes int            `yaml:"trace_capture_bytes"`
}

type logSection struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// loadConfig reads the embedded defaults, then the file (if any) over them.
// Unknown keys are errors; every error names the line and column.
func loadConfig(path string) (*fileConfig, error) {
	var fc fileConfig
	if err := decodeYAML(defaultYAML, &fc); err != nil {
		return nil, fmt.Errorf("embedded defaults: %w", err)
	}
	if path == "" {
		return &fc, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := decodeYAML(b, &fc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &fc, nil
}

func (fc *fileConfig) relayConfig() relay.Config {
	return relay.Config{
		Listen:            fc.Listen,
		URIs:              fc.Relay.URIs,
		Auth:              fc.Relay.Auth,
		Limits:            fc.Relay.Limits,
		Outbound:          fc.Relay.Outbound,
		TraceCaptureBytes: fc.Relay.TraceCaptureBytes,
	}
}

func newLogger(ls logSection, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(ls.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(ls.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format must be text or json, not %q", ls.Format)
}
