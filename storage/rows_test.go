package storage

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"
)

func TestFrameRow(t *testing.T) {
	ts := time.Date(2026, 12, 1, 9, 30, 15, 123456789, time.UTC)
	v4 := event.ConnInfo{ID: 42, Transport: "msrps", Dir: event.DirIn,
		Local: netip.MustParseAddrPort("192.0.2.1:2856"), Remote: netip.MustParseAddrPort("198.51.100.7:50123")}
	v6 := event.ConnInfo{ID: 43, Transport: "msrp", Dir: event.DirOut,
		Local: netip.MustParseAddrPort("[2001:db8::1]:2855"), Remote: netip.MustParseAddrPort("[2001:db8::2]:2855")}
	send := "MSRP a1 SEND\r\nTo-Path: msrp://r:2855/x;tcp\r\nMessage-ID: m1\r\nByte-Range: 1-10/25\r\nContent-Type: text/plain\r\n\r\n0123456789\r\n-------a1+\r\n"
	tests := []struct {
		name      string
		conn      event.ConnInfo
		frame     event.FrameInfo
		bodyBytes int
		want      Frame
	}{
		{
			name: "SEND over IPv4, body cut at body_bytes", conn: v4, bodyBytes: 4,
			frame: event.FrameInfo{Dir: event.DirIn, TransactID: []byte("a1"), Method: []byte("SEND"), MessageID: []byte("m1"),
				ContentType: []byte("text/plain"), FromSession: "sB", ToSession: "sA", Flag: '+', Size: 12345, Wire: []byte(send)},
			want: Frame{Direction: "in", Transport: "msrps", LocalIP: netip.MustParseAddr("192.0.2.1"), LocalPort: 2856,
				RemoteIP: netip.MustParseAddr("198.51.100.7"), RemotePort: 50123, ConnID: 42, SessionID: "sB", PeerSessionID: "sA",
				CorrelationID: "sA~sB", TransactID: "a1", Method: "SEND", MessageID: "m1", ByteRange: "1-10/25",
				ContentType: "text/plain", Flag: "+", Size: 12345, Body: "0123"},
		},
		{
			name: "whole body up to the end-line", conn: v4, bodyBytes: 1024,
			frame: event.FrameInfo{Dir: event.DirIn, TransactID: []byte("a1"), Method: []byte("SEND"), Flag: '+', Wire: []byte(send)},
			want: Frame{Direction: "in", Transport: "msrps", LocalIP: netip.MustParseAddr("192.0.2.1"), LocalPort: 2856,
				RemoteIP: netip.MustParseAddr("198.51.100.7"), RemotePort: 50123, ConnID: 42, CorrelationID: "conn-42",
				TransactID: "a1", Method: "SEND", ByteRange: "1-10/25", Flag: "+", Body: "0123456789"},
		},
		{
			name: "capture cut in the body", conn: v4, bodyBytes: 1024,
			frame: event.FrameInfo{Dir: event.DirIn, TransactID: []byte("a1"), Method: []byte("SEND"), FromSession: "s1", Flag: '$',
				Wire: []byte(send[:strings.Index(send, "0123")+6])},
			want: Frame{Direction: "in", Transport: "msrps", LocalIP: netip.MustParseAddr("192.0.2.1"), LocalPort: 2856,
				RemoteIP: netip.MustParseAddr("198.51.100.7"), RemotePort: 50123, ConnID: 42, SessionID: "s1", CorrelationID: "s1",
				TransactID: "a1", Method: "SEND", ByteRange: "1-10/25", Flag: "$", Body: "012345"},
		},
		{
			name: "AUTH over IPv6 with a username, ToSession only", conn: v6, bodyBytes: 1024,
			frame: event.FrameInfo{Dir: event.DirOut, TransactID: []byte("q9"), Method: []byte("AUTH"), ToSession: "s7", Flag: '$',
				Wire: []byte("MSRP q9 AUTH\r\nAuthorization: Digest realm=\"example.com\", username=\"alice@example.com\", nonce=\"n\"\r\n-------q9$\r\n")},
			want: Frame{Direction: "out", Transport: "msrp", LocalIP: netip.MustParseAddr("2001:db8::1"), LocalPort: 2855,
				RemoteIP: netip.MustParseAddr("2001:db8::2"), RemotePort: 2855, ConnID: 43, PeerSessionID: "s7", CorrelationID: "s7",
				TransactID: "q9", Method: "AUTH", AuthUser: "alice@example.com", Flag: "$"},
		},
		{
			name: "401 to AUTH", conn: v6, bodyBytes: 1024,
			frame: event.FrameInfo{Dir: event.DirOut, TransactID: []byte("q9"), Status: 401, Flag: '$',
				Wire: []byte("MSRP q9 401 Unauthorized\r\nTo-Path: msrp://c:1/x;tcp\r\nwww-authenticate: Digest realm=\"r\", nonce=\"n\"\r\n-------q9$\r\n")},
			want: Frame{Direction: "out", Transport: "msrp", LocalIP: netip.MustParseAddr("2001:db8::1"), LocalPort: 2855,
				RemoteIP: netip.MustParseAddr("2001:db8::2"), RemotePort: 2855, ConnID: 43, CorrelationID: "conn-43",
				TransactID: "q9", Status: 401, AuthResponse: true, Flag: "$"},
		},
		{
			name: "200 to SEND is no AUTH result; unquoted username on a request ignored for responses", conn: v4, bodyBytes: 1024,
			frame: event.FrameInfo{Dir: event.DirIn, TransactID: []byte("z"), Status: 200, Flag: '$',
				Wire: []byte("MSRP z 200 OK\r\nTo-Path: msrp://c:1/x;tcp\r\n-------z$\r\n")},
			want: Frame{Direction: "in", Transport: "msrps", LocalIP: netip.MustParseAddr("192.0.2.1"), LocalPort: 2856,
				RemoteIP: netip.MustParseAddr("198.51.100.7"), RemotePort: 50123, ConnID: 42, CorrelationID: "conn-42",
				TransactID: "z", Status: 200, Flag: "$"},
		},
		{
			name: "no body stored with body_bytes < 0", conn: v4, bodyBytes: -1,
			frame: event.FrameInfo{Dir: event.DirIn, TransactID: []byte("a1"), Method: []byte("SEND"), Flag: '+', Wire: []byte(send)},
			want: Frame{Direction: "in", Transport: "msrps", LocalIP: netip.MustParseAddr("192.0.2.1"), LocalPort: 2856,
				RemoteIP: netip.MustParseAddr("198.51.100.7"), RemotePort: 50123, ConnID: 42, CorrelationID: "conn-42",
				TransactID: "a1", Method: "SEND", ByteRange: "1-10/25", Flag: "+"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &event.Event{Kind: event.FrameIn, Time: ts, Conn: tt.conn, Frame: &tt.frame}
			got := FrameRow(e, tt.bodyBytes, "n1")
			tt.want.TS = ts.Truncate(time.Microsecond)
			tt.want.Node = "n1"
			tt.want.BatchID = 1
			got.localRaw, got.remoteRaw = "", ""
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestEventRow(t *testing.T) {
	ts := time.Date(2026, 12, 1, 9, 30, 15, 5000, time.UTC)
	conn := event.ConnInfo{ID: 9, Transport: "msrps", Dir: event.DirOut,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("[2001:db8::9]:2856")}
	e := &event.Event{Kind: event.Closed, Time: ts, Conn: conn, Reason: event.CloseIdleTimeout, Err: errors.New("boom")}
	got := EventRow(e, "n")
	want := ConnEvent{TS: ts, Event: "closed", Reason: "idle-timeout", Error: "boom", Direction: "out", Transport: "msrps",
		LocalIP: netip.MustParseAddr("10.0.0.1"), LocalPort: 40000, RemoteIP: netip.MustParseAddr("2001:db8::9"), RemotePort: 2856,
		ConnID: 9, Node: "n", BatchID: 1}
	got.localRaw, got.remoteRaw = "", ""
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	e = &event.Event{Kind: event.TLSHandshake, Time: ts, Conn: conn, TLS: &event.TLSInfo{OK: true, PeerSubject: "CN=peer"}}
	if got := EventRow(e, ""); got.Event != "tls-handshake" || got.TLSSubject != "CN=peer" || got.Reason != "" {
		t.Errorf("tls event: %+v", got)
	}
}

func TestCorrelationID(t *testing.T) {
	for _, tt := range []struct{ from, to, want string }{
		{"b", "a", "a~b"}, {"a", "b", "a~b"}, {"a", "", "a"}, {"", "b", "b"}, {"", "", "conn-77"},
	} {
		if got := string(CorrelationID(nil, tt.from, tt.to, 77)); got != tt.want {
			t.Errorf("CorrelationID(%q, %q) = %q, want %q", tt.from, tt.to, got, tt.want)
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	var b batchBuilder
	var want []Frame
	for i := range 10 {
		e := testFrame(i)
		b.add(string(append([]byte{kindFrame}, appendFrame(nil, e, 1024)...)))
		want = append(want, FrameRow(e, 1024, "node-x"))
		b.add(string(append([]byte{kindEvent}, appendEvent(nil, testConnEvent(i))...)))
	}
	rec := b.seal(nil, 99, "node-x")
	got, err := decodeBatch(string(rec))
	if err != nil {
		t.Fatal(err)
	}
	if got.id != 99 || got.nFrames != 10 || got.nEvents != 10 || got.minTS != testBase.UnixMicro() || got.node != "node-x" {
		t.Fatalf("header: %+v", got)
	}
	i := 0
	if err := eachFrame(got, func(f Frame) {
		w := want[i]
		w.BatchID = 99
		if f != w {
			t.Errorf("frame %d: got %+v want %+v", i, f, w)
		}
		i++
	}); err != nil {
		t.Fatal(err)
	}
	for cut := range len(rec) {
		if _, err := decodeBatch(string(rec[:cut])); err == nil {
			t.Fatalf("a record cut at %d of %d decoded", cut, len(rec))
		}
	}
}

func FuzzParseWire(f *testing.F) {
	f.Add([]byte("MSRP a SEND\r\nByte-Range: 1-2/2\r\n\r\nhi\r\n-------a$\r\n"), []byte("a"), false)
	f.Add([]byte("MSRP a AUTH\r\nAuthorization: Digest username=\"u\\\"x\", realm=r\r\n-------a$\r\n"), []byte("a"), false)
	f.Add([]byte("MSRP a 401 X\r\nWWW-Authenticate: Digest\r\n"), []byte("a"), true)
	f.Fuzz(func(t *testing.T, wire, tid []byte, response bool) {
		w := parseWire(wire, tid, response)
		for _, v := range [][]byte{w.byteRange, w.authUser, w.body} {
			if len(v) > len(wire) {
				t.Fatalf("field longer than the capture")
			}
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	var b batchBuilder
	b.add(string(append([]byte{kindFrame}, appendFrame(nil, testFrame(1), 64)...)))
	b.add(string(append([]byte{kindEvent}, appendEvent(nil, testConnEvent(1))...)))
	f.Add(b.seal(nil, 1, "n"))
	f.Add([]byte("MSB1"))
	f.Fuzz(func(t *testing.T, rec []byte) {
		got, err := decodeBatch(string(rec))
		if err != nil {
			return
		}
		// A record that decodes yields exactly its counted rows.
		nf, ne := 0, 0
		if err := eachFrame(got, func(Frame) { nf++ }); err != nil || nf != got.nFrames {
			t.Fatalf("frames: %d of %d, %v", nf, got.nFrames, err)
		}
		if err := eachEvent(got, func(ConnEvent) { ne++ }); err != nil || ne != got.nEvents {
			t.Fatalf("events: %d of %d, %v", ne, got.nEvents, err)
		}
	})
}
