package hepsink

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
)

func set(f func(c *Config)) func(v any) error {
	return func(v any) error { f(v.(*Config)); return nil }
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		f    func(c *Config)
		want string // "" = accepted
	}{
		{"minimal", func(c *Config) { c.Addr = "127.0.0.1:9060" }, ""},
		{"no addr", func(c *Config) {}, "needs addr"},
		{"no port", func(c *Config) { c.Addr = "127.0.0.1" }, "want host:port"},
		{"transport", func(c *Config) { c.Addr, c.Transport = "h:1", "sctp" }, "udp, tcp or tls"},
		{"proto type", func(c *Config) { c.Addr, c.ProtoType = "h:1", 256 }, "proto_type"},
		{"event format", func(c *Config) { c.Addr, c.EventFormat = "h:1", "xml" }, "event_format"},
		{"tiny packets", func(c *Config) { c.Addr, c.MaxPacket = "h:1", 100 }, "max_packet"},
		{"ca_file without tls", func(c *Config) { c.Addr, c.CAFile = "h:1", "/ca.pem" }, "tls only"},
	}
	for _, tc := range tests {
		_, err := Kind{}.Decode(set(tc.f))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// A frame cut by the sink fits the packet as it is: with a small
// max_packet the marker still states the true totals (the client does not
// cut again), and the kind's counters are reported.
func TestSmallPacketsCutOnce(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg, err := Kind{}.Decode(set(func(c *Config) { c.Addr, c.MaxPacket, c.UDPGSO = pc.LocalAddr().String(), 1400, new(bool) }))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Kind{}.Open(context.Background(), cfg, sink.Options{Name: "h", QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	wire := make([]byte, 5000)
	for i := range wire {
		wire[i] = 'a' + byte(i%26)
	}
	s.Put(&event.Event{Kind: event.FrameIn, Time: time.Now(), Conn: event.ConnInfo{ID: 4, Dir: event.DirIn},
		Frame: &event.FrameInfo{Dir: event.DirIn, TransactID: []byte("t9"), Flag: '$', Size: 9000, Wire: wire}})
	buf := make([]byte, 70000)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := hep.Decode(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if n > 1400 || !strings.HasSuffix(string(p.Payload), " of 9000 bytes omitted]\r\n-------t9$\r\n") {
		t.Fatalf("%d-byte packet, payload ends %q", n, p.Payload[max(0, len(p.Payload)-80):])
	}
	kept := strings.Index(string(p.Payload), "\r\n[msrpscope")
	if want := "[msrpscope: frame truncated, " + itoa(9000-kept) + " of 9000"; !strings.Contains(string(p.Payload), want) {
		t.Fatalf("payload keeps %d bytes and lacks %q", kept, want)
	}
	st := s.Stats()
	if st.Type != "hep" || len(st.Counters) != 4 || st.Counters[0].Name != "busy" || st.Counters[1].Name != "reconnects" || st.Counters[2].Name != "replayed" || st.Counters[3].Name != "segmented" {
		t.Fatalf("stats %+v", st)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
