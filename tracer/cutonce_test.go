package tracer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

// A 40,000-byte SEND (40,364 bytes on the wire) of which the relay
// captured 16,384 bytes reaches HEP (frame_limit 16384, the default) and
// pcap (no limit of its own) cut once, both with the true totals.
func TestFrameCutOnceWithTrueTotals(t *testing.T) {
	head := "MSRP k8s2 SEND\r\nTo-Path: msrp://relay;tcp/x msrp://b;tcp\r\nFrom-Path: msrp://a;tcp\r\nMessage-ID: m1\r\nByte-Range: 1-40000/40000\r\nContent-Type: text/plain\r\n\r\n"
	end := "\r\n-------k8s2$\r\n"
	body := strings.Repeat("0123456789", 4000) // 40,000 bytes
	// Longer paths, as through two relays: 348 header bytes in all.
	head = strings.Replace(head, "From-Path: msrp://a;tcp\r\n", "From-Path: msrp://a;tcp"+strings.Repeat("x", 40364-len(head)-len(body)-len(end))+"\r\n", 1)
	wire := head + body + end
	if len(wire) != 40364 {
		t.Fatalf("frame of %d bytes", len(wire))
	}
	const captured = 16384
	e := frameEv(3, partnerA, relayAddr, event.DirIn, "SEND", "s1")
	e.Frame.TransactID = []byte("k8s2")
	e.Frame.Size, e.Frame.Wire = int64(len(wire)), []byte(wire[:captured])
	const marker = "\r\n[msrpscope: frame truncated, 23980 of 40364 bytes omitted]\r\n-------k8s2$\r\n"

	c := newUDPCollector(t)
	dir := t.TempDir()
	tr, err := New(context.Background(), Config{Enabled: true,
		Rules: []Rule{{Name: "all", Frames: true, To: []string{"homer", "files"}}},
		Sinks: map[string]SinkConfig{"homer": hepTo(c.addr()), "files": block("pcap", 0, `{"dir":`+strconv.Quote(dir)+`}`)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Observe(e)
	p := c.waitN(t, 1)[0]
	if want := wire[:captured] + marker; string(p.Payload) != want {
		t.Fatalf("HEP payload of %d bytes ends %q, want %d bytes ending %q", len(p.Payload), tail(p.Payload), len(want), marker)
	}
	closeTracer(t, tr)
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	// The pcap stream splits the frame into 1460-byte segments; the marker
	// lies within one of them (bytes 16384-16459 of the stream).
	if !bytes.Contains(all, []byte(marker)) {
		t.Fatalf("pcap files %v lack %q", files, marker)
	}
	if bytes.Contains(all, []byte(sink.TruncationMarker+"148 ")) {
		t.Fatal("pcap cut twice")
	}
}

func tail(b []byte) []byte { return b[max(0, len(b)-90):] }
