package hep

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendEventColon(t *testing.T) {
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{ProtocolMSRP, EventAccepted, StatusSuccess, "Connection accepted", nil}, "MSRP:ACCEPTED:SUCCESS:Connection accepted"},
		{Event{ProtocolMSRPS, EventClosed, StatusSuccess, "EOF received", nil}, "MSRPS:CLOSED:SUCCESS:EOF received"},
		{Event{ProtocolMSRPS, EventTLSHandshake, StatusFailure, "bad certificate", []Attr{{AttrClientSubject, "CN=a"}, {AttrClientIssuer, "CN=ca"}}},
			"MSRPS:TLS_HANDSHAKE:FAILURE:bad certificate:CN=a:CN=ca"},
		{Event{}, ":::"},
	}
	for _, tc := range tests {
		if got := string(AppendEvent([]byte(">"), FormColon, tc.ev)); got != ">"+tc.want {
			t.Errorf("got %q, want %q", got, ">"+tc.want)
		}
	}
}

func TestAppendEventJSON(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string // exact output
	}{
		{"plain", Event{ProtocolMSRP, EventConnected, StatusSuccess, "Successfully connected...", nil},
			`{"Protocol":"MSRP","Event":"CONNECTED","Status":"SUCCESS","Message":"Successfully connected..."}`},
		{"escapes", Event{ProtocolMSRPS, EventConnectFailed, StatusFailure, "a\"b\\c\nd\re\tf\x00g\x1f<&>é€😀", []Attr{{"k\"", "v\u2028w\u2029"}}},
			`{"Protocol":"MSRPS","Event":"CONNECT_FAILED","Status":"FAILURE","Message":"a\"b\\c\nd\re\tf\u0000g\u001f<&>é€😀","k\"":"v\u2028w\u2029"}`},
		{"invalid utf-8", Event{Message: "a\xffb\xc3"},
			`{"Protocol":"","Event":"","Status":"","Message":"a\ufffdb\ufffd"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendEvent(nil, FormJSON, tc.ev)
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatal("not valid JSON")
			}
			var m map[string]string
			if err := json.Unmarshal(got, &m); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"Protocol": tc.ev.Protocol, "Event": tc.ev.Name, "Status": tc.ev.Status,
				"Message": perByteValidUTF8(tc.ev.Message)}
			for _, a := range tc.ev.Extra {
				want[a.Key] = a.Value
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("%s = %q, want %q", k, m[k], v)
				}
			}
		})
	}
}

// FuzzEventJSON: whatever the strings, the JSON form is valid JSON and carries them back.
func FuzzEventJSON(f *testing.F) {
	f.Add("MSRP", "CONNECTED", "SUCCESS", "ok", "client-subject", "CN=x")
	f.Add("\x00", "\"", "\\", "\xff\xfe", "\u2028", "\U0001F600")
	f.Fuzz(func(t *testing.T, proto, name, status, msg, k, v string) {
		ev := Event{proto, name, status, msg, []Attr{{k, v}}}
		got := AppendEvent(nil, FormJSON, ev)
		if !json.Valid(got) {
			t.Fatalf("invalid JSON: %q", got)
		}
		var m map[string]string
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatal(err)
		}
		fix := perByteValidUTF8
		// A duplicate key (k equal to a standard one) makes the later value win.
		want := map[string]string{"Protocol": fix(proto), "Event": fix(name), "Status": fix(status), "Message": fix(msg)}
		want[fix(k)] = fix(v)
		for key, val := range want {
			if m[key] != val {
				t.Fatalf("%q = %q, want %q", key, m[key], val)
			}
		}
	})
}

func msrpFrame(tid string, body []byte, flag byte) []byte {
	var b []byte
	b = append(b, "MSRP "+tid+" SEND\r\nTo-Path: msrp://relay.example.com:2855/s1;tcp\r\nFrom-Path: msrp://10.0.0.1:5000/abc;tcp\r\n"+
		"Message-ID: m1\r\nByte-Range: 1-"+strconv.Itoa(len(body))+"/"+strconv.Itoa(len(body))+"\r\nContent-Type: text/plain\r\n\r\n"...)
	b = append(b, body...)
	return append(b, "\r\n-------"+tid+string(flag)+"\r\n"...)
}

func TestAppendFrame(t *testing.T) {
	small := msrpFrame("a1", []byte("hello"), '$')
	big := msrpFrame("tid0123456789", bytes.Repeat([]byte("0123456789"), 2000), '+') // 20 KB body
	euro := msrpFrame("e1", []byte(strings.Repeat("€", 1000)), '$')
	noEnd := bytes.Repeat([]byte("z"), 5000)
	tests := []struct {
		name   string
		frame  []byte
		limit  int
		whole  bool   // expect the frame unchanged
		tail   string // expected end of a truncated payload
		maxLen int
	}{
		{"fits", small, 1000, true, "", 0},
		{"exact", small, len(small), true, "", 0},
		{"no limit", big, 0, true, "", 0},
		{"negative limit", big, -1, true, "", 0},
		{"cut keeps end-line", big, 4096, false, " bytes omitted]\r\n-------tid0123456789+\r\n", 4096},
		{"below minimum raised", big, 10, false, " bytes omitted]\r\n-------tid0123456789+\r\n", MinFrameLimit},
		{"minimum, small frame kept", small, 10, true, "", 0},
		{"utf-8 boundary", euro, 1001, false, " bytes omitted]\r\n-------e1$\r\n", 1001},
		{"no end-line", noEnd, 1000, false, " of 5000 bytes omitted]", 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendFrame([]byte("pre"), tc.frame, tc.limit)
			if !bytes.HasPrefix(got, []byte("pre")) {
				t.Fatal("dst prefix lost")
			}
			got = got[3:]
			if tc.whole {
				if !bytes.Equal(got, tc.frame) {
					t.Fatalf("frame changed: %d bytes -> %d", len(tc.frame), len(got))
				}
				return
			}
			if len(got) > tc.maxLen {
				t.Errorf("payload %d bytes > %d", len(got), tc.maxLen)
			}
			if len(got) < tc.maxLen-10 {
				t.Errorf("payload %d bytes: wasted room below %d", len(got), tc.maxLen)
			}
			if !strings.HasSuffix(string(got), tc.tail) {
				t.Errorf("payload ends %q, want suffix %q", got[max(0, len(got)-80):], tc.tail)
			}
			i := bytes.Index(got, []byte("\r\n"+TruncationMarker))
			if i < 0 {
				t.Fatalf("no marker in %q", got)
			}
			if !bytes.Equal(got[:i], tc.frame[:i]) {
				t.Error("head is not the frame's beginning")
			}
			if !utf8.Valid(got) {
				t.Error("cut split a UTF-8 sequence")
			}
			// The marker states how much is missing, and the numbers add up.
			var omitted, total int
			rest := string(got[i+2+len(TruncationMarker):])
			if _, err := fmt.Sscanf(rest, "%d of %d bytes omitted]", &omitted, &total); err != nil {
				t.Fatalf("marker %q: %v", rest, err)
			}
			if total != len(tc.frame) {
				t.Errorf("marker total %d, want %d", total, len(tc.frame))
			}
			endLine := len(tc.tail) - len(" bytes omitted]")
			if tc.name == "no end-line" {
				endLine = 0
			}
			if i+omitted+endLine != len(tc.frame) {
				t.Errorf("kept %d + omitted %d + end-line %d != %d", i, omitted, endLine, len(tc.frame))
			}
		})
	}
}

func TestProfileDefaultsAndFrames(t *testing.T) {
	src := netip.MustParseAddrPort("10.0.0.1:5000")
	dst := netip.MustParseAddrPort("10.0.0.2:2855")
	m := Meta{Src: src, Dst: dst, CorrelationID: []byte("SID-1")}
	frame := msrpFrame("t1", bytes.Repeat([]byte("b"), 60000), '$')

	var zero Profile
	before := time.Now()
	b, err := zero.AppendFramePacket(nil, m, frame)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.ProtoType != ProtoLog || p.IPProto != IPProtoTCP || p.Family != FamilyIPv4 || p.Src != src || p.Dst != dst ||
		string(p.CorrelationID) != "SID-1" || p.AuthKey != nil || p.NodeName != nil {
		t.Errorf("zero profile packet: %+v", p)
	}
	if p.Time.Before(before.Truncate(time.Second)) {
		t.Errorf("zero Meta.Time not replaced by now: %v", p.Time)
	}
	if len(p.Payload) > DefaultFrameLimit || len(p.Payload) < DefaultFrameLimit-100 {
		t.Errorf("default frame limit: payload %d bytes", len(p.Payload))
	}

	// Small MaxPacketSize (e.g. UDP below the MTU): the frame is cut so the whole packet fits.
	pr := Profile{ProtoType: ProtoNet, CaptureID: 7, AuthKey: []byte("pw"), NodeName: []byte("relay-1"), FrameLimit: -1, MaxPacketSize: 1400}
	b, err = pr.AppendFramePacket(nil, m, frame)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1400 || len(b) < 1350 {
		t.Errorf("packet %d bytes, want close to and <= 1400", len(b))
	}
	p, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.ProtoType != ProtoNet || p.CaptureID != 7 || string(p.AuthKey) != "pw" || string(p.NodeName) != "relay-1" ||
		!bytes.HasSuffix(p.Payload, []byte("omitted]\r\n-------t1$\r\n")) {
		t.Errorf("packet: %+v", p)
	}

	// Unlimited frame limit, big enough packet size: the frame goes whole.
	pr.MaxPacketSize = 0
	b, err = pr.AppendFramePacket(nil, m, frame)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = Decode(b); err != nil || !bytes.Equal(p.Payload, frame) {
		t.Fatalf("unlimited: err %v, payload %d bytes, want %d", err, len(p.Payload), len(frame))
	}

	// Events: form, errors.
	pr = Profile{EventForm: FormJSON}
	ev := Event{ProtocolMSRP, EventClosed, StatusSuccess, "EOF received", nil}
	b, err = pr.AppendEventPacket([]byte("x"), Meta{Src: src, Dst: dst, CorrelationID: []byte("conn-9")}, ev)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = Decode(b[1:]); err != nil || !json.Valid(p.Payload) || string(p.CorrelationID) != "conn-9" {
		t.Fatalf("json event: err %v, payload %q", err, p.Payload)
	}
	if got, err := pr.AppendEventPacket([]byte("x"), Meta{Src: src, Dst: dst}, ev); !errors.Is(err, ErrEmptyCorrelationID) || string(got) != "x" {
		t.Errorf("empty cid: err %v, dst %q", err, got)
	}
	if got, err := pr.AppendFramePacket([]byte("x"), Meta{CorrelationID: []byte{}}, frame); !errors.Is(err, ErrEmptyCorrelationID) || string(got) != "x" {
		t.Errorf("empty cid frame: err %v, dst %q", err, got)
	}
	huge := Event{Message: strings.Repeat("m", 70000)}
	if got, err := pr.AppendEventPacket([]byte("x"), m, huge); !errors.Is(err, ErrTooLarge) || string(got) != "x" {
		t.Errorf("huge event: err %v, dst %d bytes", err, len(got))
	}
	pr.MaxPacketSize = 100
	if _, err := pr.AppendFramePacket(nil, m, frame); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxPacketSize below MinFrameLimit: err %v, want ErrTooLarge", err)
	}
}

// perByteValidUTF8 replaces every invalid byte with U+FFFD (as encoding/json does).
func perByteValidUTF8(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}
