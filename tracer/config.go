package tracer

import (
	"errors"
	"fmt"
	"time"
)

// Config is the tracing part of msrpscope's configuration: the YAML keys
// tracing.enabled, tracing.rules and sinks. docs/CONFIG.md lists them.
type Config struct {
	Enabled bool                  `yaml:"enabled"` // initial state of the runtime switch
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

// SinkConfig is one destination of traces. Type selects which keys apply.
type SinkConfig struct {
	Type  string `yaml:"type"`  // "hep" or "pcap"
	Queue int    `yaml:"queue"` // items that may wait for this sink; when full, new ones are dropped and counted. Default 8192

	// hep: a HEPv3 collector (Homer's heplify-server, Kamailio sipcapture, ...).
	Addr               string `yaml:"addr"`                 // host:port
	Transport          string `yaml:"transport"`            // udp (default), tcp or tls
	CaptureID          uint32 `yaml:"capture_id"`           // chunk 0x000c
	Node               string `yaml:"node"`                 // chunk 0x0013 (capture agent name)
	AuthKey            string `yaml:"auth_key"`             // chunk 0x000e
	ProtoType          int    `yaml:"proto_type"`           // chunk 0x000b: 100 (LOG, default: Homer 7 stores and shows it) or 89 (0x59, OpenSIPS "net")
	EventFormat        string `yaml:"event_format"`         // "colon" (OpenSIPS homer5 form, default) or "json"
	FrameLimit         int    `yaml:"frame_limit"`          // bytes of a frame sent; longer frames are cut with a marker. Default 16384
	MaxPacket          int    `yaml:"max_packet"`           // bytes of one HEP packet; default 65507 (use ~1400 for UDP over real networks)
	UDPGSO             *bool  `yaml:"udp_gso"`              // udp: send batches as GSO runs where the kernel offers it (default true)
	CAFile             string `yaml:"ca_file"`              // tls: CA to verify the collector
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // tls: do not verify (tests only)

	// pcap: rotating pcap files Wireshark opens.
	Dir           string        `yaml:"dir"`             // default "." (the working directory)
	Prefix        string        `yaml:"prefix"`          // file name prefix, default "msrpscope"
	MaxFileBytes  int64         `yaml:"max_file_bytes"`  // rotate above this; default 64 MiB
	MaxFileAge    time.Duration `yaml:"max_file_age"`    // rotate after this; default 1h
	MaxTotalBytes int64         `yaml:"max_total_bytes"` // delete the oldest files above this; default 1 GiB
}

// ErrConfig is wrapped by every tracing configuration error.
var ErrConfig = errors.New("tracer: bad configuration")

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

const defaultQueue = 8192
