package relay_test

import (
	"errors"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// A SEND with a malformed Byte-Range (RFC 4975 §9 ABNF, §7.1.1) gets 400
// and goes nowhere; for a valid one, the relay's own failure REPORT
// carries a Byte-Range that the relay's parser accepts, the SEND's value
// as parsed (issue 14, defect 9: it used to copy
// "-7-99999999999999999999999/abc" into its REPORT verbatim).
func TestSendByteRangeValidated(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	hop := fakeHop(t, 415) // every request it gets is answered 415: the relay REPORTs
	send := func(t *testing.T, br string) int {
		t.Helper()
		hs := []msrpclient.Header{{Name: msrp.HdrMessageID, Value: "m-" + br}, {Name: msrp.HdrByteRange, Value: br},
			{Name: msrp.HdrContentType, Value: "text/plain"}}
		code, _, err := a.Request(ctxT(t), "SEND", []string{useA, hop}, hs, []byte("hi"))
		var se *msrpclient.StatusError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("SEND Byte-Range %q: %v", br, err)
		}
		if se != nil {
			code = se.Code
		}
		return code
	}
	for _, br := range []string{
		"-7-99999999999999999999999/abc", // the one found
		"", "1-2", "1-2/", "-2/2", "1-/2", "0-2/2", "1-2/1", "3-1/5", "a-2/2", "1-b/2", "1-2/c",
		"1--2/2", "1-2/2/2", "1-2/-2", "+1-2/2", "1-2/2 x", "*-2/2", "1-**/2",
		"99999999999999999999-1/1", "1-99999999999999999999/*", "4-*/2", "1-3/2",
	} {
		t.Run("bad "+br, func(t *testing.T) {
			if code := send(t, br); code != 400 {
				t.Fatalf("SEND with Byte-Range %q: %d, want 400", br, code)
			}
		})
	}
	for _, tc := range []struct{ in, want string }{
		{"1-2/2", "1-2/2"}, {"1-*/*", "1-*/*"}, {"1-2/*", "1-2/*"}, {"5-6/10", "5-6/10"},
		{"01-02/0002", "1-2/2"}, {"3-*/4", "3-*/4"},
	} {
		t.Run("good "+tc.in, func(t *testing.T) {
			if code := send(t, tc.in); code != 200 {
				t.Fatalf("SEND with Byte-Range %q: %d, want 200", tc.in, code)
			}
			rep := receive(t, a, "REPORT")
			v, _ := rep.Get(msrp.HdrByteRange)
			if _, err := msrp.ParseByteRange([]byte(v)); err != nil || v != tc.want {
				t.Fatalf("REPORT for Byte-Range %q carries %q (%v), want %q", tc.in, v, err, tc.want)
			}
			if rep.Status == nil || rep.Status.Code != 415 || rep.MessageID != "m-"+tc.in {
				t.Fatalf("REPORT %+v", rep)
			}
		})
	}
}

// A REPORT with a malformed Byte-Range is dropped (never answered,
// RFC 4975 §7.1.2), not passed on; a valid one passes.
func TestReportByteRangeValidated(t *testing.T) {
	tr := startRelay(t, nil)
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})
	report := func(mid, br string) {
		t.Helper()
		hs := []msrpclient.Header{{Name: msrp.HdrMessageID, Value: mid}, {Name: msrp.HdrByteRange, Value: br},
			{Name: msrp.HdrStatus, Value: "000 200 OK"}}
		if _, _, err := a.Request(ctxT(t), "REPORT", []string{useA, useB, b.LocalURI()}, hs, nil); err != nil {
			t.Fatal(err)
		}
	}
	report("bad", "-7-99999999999999999999999/abc")
	report("good", "1-2/2")
	if got := receive(t, b, "REPORT"); got.MessageID != "good" {
		t.Fatalf("B got the REPORT %q first, want the valid one", got.MessageID)
	}
	if st := tr.Stats(); st.Rejected != 1 {
		t.Fatalf("Rejected %d, want 1", st.Rejected)
	}
}
