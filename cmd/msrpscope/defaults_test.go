package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/admin"
	"github.com/msrpscope/msrpscope/internal/recent"

	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/tracer/pcap"
	"github.com/msrpscope/msrpscope/tracer/pcap/pcapsink"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// default.yaml documents every key with its default: the values it states
// must be the ones the code applies to a zero field, so the file and the
// code cannot drift apart.
func TestDefaultYAMLMatchesCode(t *testing.T) {
	fc, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fc.Relay.Limits, relay.DefaultLimits(); got != want {
		t.Errorf("relay.limits in default.yaml\n%+v\nthe code's defaults\n%+v", got, want)
	}
	a, da := fc.Relay.Auth, relay.DefaultAuth()
	if a.Expires != da.Expires || a.MinExpires != da.MinExpires || a.MaxExpires != da.MaxExpires {
		t.Errorf("relay.auth expires %d/%d/%d in default.yaml, %d/%d/%d in the code",
			a.Expires, a.MinExpires, a.MaxExpires, da.Expires, da.MinExpires, da.MaxExpires)
	}
	if a.NonceTTL != auth.DefaultNonceTTL {
		t.Errorf("relay.auth.nonce_ttl %s in default.yaml, %s in the code", a.NonceTTL, auth.DefaultNonceTTL)
	}
	if got, want := fmt.Sprint(a.Algorithms), fmt.Sprint(auth.DefaultAlgorithms()); got != want {
		t.Errorf("relay.auth.algorithms %s in default.yaml, %s in the code", got, want)
	}
	if fc.Relay.TraceCaptureBytes != relay.DefaultTraceCaptureBytes {
		t.Errorf("trace_capture_bytes %d in default.yaml, %d in the code", fc.Relay.TraceCaptureBytes, relay.DefaultTraceCaptureBytes)
	}
	if fc.Admin.Addr != admin.DefaultAddr || fc.Admin.MetricsAuth || fc.Admin.Token != "" {
		t.Errorf("admin in default.yaml %+v; the admin API's default address %s, no token", fc.Admin, admin.DefaultAddr)
	}
	if !fc.Metrics.Enabled || fc.Metrics.OTLPInterval != 30*time.Second || fc.Metrics.OTLPEndpoint != "" {
		t.Errorf("metrics in default.yaml %+v; want enabled, no OTLP endpoint, interval 30s (internal/metrics' default)", fc.Metrics)
	}
	b := fc.Sinks["pcap"]
	if b == nil || b.Type != "pcap" {
		t.Fatalf("default.yaml has no pcap sink: %+v", fc.Sinks)
	}
	if b.Queue != sink.DefaultQueueSize {
		t.Errorf("sinks.pcap.queue %d in default.yaml, sink.DefaultQueueSize %d", b.Queue, sink.DefaultQueueSize)
	}
	var pc pcapsink.Config
	if err := b.decode(&pc); err != nil {
		t.Fatal(err)
	}
	if pc.Prefix != pcap.DefaultPrefix || pc.MaxFileBytes != pcap.DefaultMaxFileBytes ||
		pc.MaxFileAge != pcap.DefaultMaxFileAge || pc.MaxTotalBytes != pcap.DefaultMaxTotalBytes {
		t.Errorf("sinks.pcap in default.yaml %+v; tracer/pcap's defaults: prefix %s, max_file_bytes %d, max_file_age %s, max_total_bytes %d",
			pc, pcap.DefaultPrefix, pcap.DefaultMaxFileBytes, pcap.DefaultMaxFileAge, pcap.DefaultMaxTotalBytes)
	}
	rb := fc.Sinks["recent"]
	if rb == nil || rb.Type != "recent" {
		t.Fatalf("default.yaml has no recent sink (the web view's flows): %+v", fc.Sinks)
	}
	var rc recent.Config
	if err := rb.decode(&rc); err != nil {
		t.Fatal(err)
	}
	if rc.Frames != recent.DefaultFrames || rc.WireBytes != recent.DefaultWireBytes {
		t.Errorf("sinks.recent in default.yaml %+v; internal/recent's defaults: frames %d, wire_bytes %d",
			rc, recent.DefaultFrames, recent.DefaultWireBytes)
	}
	if r := fc.Tracing.Rules; len(r) != 1 || fmt.Sprint(r[0].To) != "[pcap recent]" {
		t.Errorf("default rules %+v: want one rule to pcap and recent", r)
	}
}
