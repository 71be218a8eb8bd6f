package kamailio_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// endpoint is an msrpclient that AUTHed at the relay.
type endpoint struct {
	*msrpclient.Client
	usePath []string
}

func authed(t *testing.T, ctx context.Context, k *kamailio.Instance) *endpoint {
	t.Helper()
	// A small window keeps Kamailio's 32 KB per-connection write queue from
	// overflowing (it drops frames instead of applying backpressure).
	c, err := msrpclient.DialOptions(ctx, k.Addr(), nil, msrpclient.Options{Window: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	use, exp, err := c.Auth(ctx, k.URI(), kamailio.User, kamailio.Password, 0)
	if err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if exp <= 0 {
		t.Errorf("AUTH 200 Expires = %d, want > 0", exp)
	}
	p, err := msrp.ParsePath(use)
	if err != nil || len(p) != 1 || p[0].Port != k.Port() || p[0].SessionID == "" {
		t.Fatalf("Use-Path %q: want one msrp://127.0.0.1:%d/<session>;tcp URI (%v)", use, k.Port(), err)
	}
	return &endpoint{Client: c, usePath: strings.Fields(use)}
}

// pathTo is the To-Path from a to b through Kamailio: a's Use-Path, b's
// Use-Path, b's own URI (Kamailio relays to itself in between).
func pathTo(a, b *endpoint) []string {
	return append(append(append([]string{}, a.usePath...), b.usePath...), b.LocalURI())
}

// next returns the next incoming request of method on c.
func next(t *testing.T, ctx context.Context, c *endpoint, method string) *msrpclient.Received {
	t.Helper()
	for {
		select {
		case r, ok := <-c.Incoming():
			if !ok {
				t.Fatalf("connection closed waiting for %s: %v", method, c.Err())
			}
			if r.Method == method {
				return r
			}
			t.Logf("skipping incoming %s %s", r.Method, r.TransactID)
		case <-ctx.Done():
			t.Fatalf("no %s arrived: %v", method, ctx.Err())
		}
	}
}

func TestAuthWrongPassword(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := msrpclient.Dial(ctx, k.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Auth(ctx, k.URI(), kamailio.User, "wrong", 0)
	var se *msrpclient.StatusError
	if !errors.As(err, &se) || se.Code != 401 {
		t.Fatalf("AUTH with a wrong password: err = %v, want a 401 StatusError", err)
	}
}

func TestSendThroughKamailio(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := authed(t, ctx, k)
	b := authed(t, ctx, k)

	t.Run("A to B with success report", func(t *testing.T) {
		body := []byte("Hello Bob,\r\nthis crosses Kamailio twice.\r\n-------not-an-end-line$\r\n")
		res, err := a.Send(ctx, pathTo(a, b), msrpclient.Message{
			ContentType: "text/plain", Body: body, SuccessReport: "yes", FailureReport: "yes",
		})
		if err != nil {
			t.Fatalf("SEND: %v", err)
		}
		if len(res.Chunks) != 1 || res.Chunks[0].Code != 200 {
			t.Fatalf("SEND result %+v, want one chunk with 200", res)
		}
		got := next(t, ctx, b, "SEND")
		if !bytes.Equal(got.Body, body) || got.Flag != '$' || got.MessageID != res.MessageID {
			t.Fatalf("B got body %q flag %q id %q, want %q '$' %q", got.Body, got.Flag, got.MessageID, body, res.MessageID)
		}
		if len(got.ToPath) != 1 || got.ToPath[0] != b.LocalURI() {
			t.Errorf("B's SEND To-Path = %q, want [%s]", got.ToPath, b.LocalURI())
		}
		if !got.Responded {
			t.Errorf("B did not answer the SEND")
		}
		t.Logf("B's SEND From-Path: %q", got.FromPath)
		// B's success REPORT travels the From-Path back to A.
		rep := next(t, ctx, a, "REPORT")
		if rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != 200 ||
			rep.ByteRange != (msrp.ByteRange{Start: 1, End: int64(len(body)), Total: int64(len(body))}) {
			t.Fatalf("A's REPORT: id %q status %v range %v", rep.MessageID, rep.Status, rep.ByteRange)
		}
	})

	t.Run("B to A", func(t *testing.T) {
		body := []byte("Hi Alice")
		if _, err := b.Send(ctx, pathTo(b, a), msrpclient.Message{ContentType: "text/plain", Body: body}); err != nil {
			t.Fatalf("SEND: %v", err)
		}
		got := next(t, ctx, a, "SEND")
		if !bytes.Equal(got.Body, body) {
			t.Fatalf("A got %q, want %q", got.Body, body)
		}
	})

	t.Run("1 MB in 4 KB chunks", func(t *testing.T) {
		const size, chunk = 1 << 20, 4 << 10
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i*7 + i>>12)
		}
		res, err := a.Send(ctx, pathTo(a, b), msrpclient.Message{
			ContentType: "application/octet-stream", Body: body, ChunkSize: chunk,
		})
		if err != nil {
			t.Fatalf("SEND: %v", err)
		}
		if len(res.Chunks) != size/chunk {
			t.Fatalf("%d chunks, want %d", len(res.Chunks), size/chunk)
		}
		got := make([]byte, size)
		var n int64
		for n < size {
			r := next(t, ctx, b, "SEND")
			if r.MessageID != res.MessageID || r.ByteRange.Total != size || r.BodySize != r.ByteRange.End-r.ByteRange.Start+1 {
				t.Fatalf("chunk id %q range %v size %d", r.MessageID, r.ByteRange, r.BodySize)
			}
			wantFlag := byte('+')
			if r.ByteRange.End == size {
				wantFlag = '$'
			}
			if r.Flag != wantFlag {
				t.Fatalf("chunk %v flag %q, want %q", r.ByteRange, r.Flag, wantFlag)
			}
			copy(got[r.ByteRange.Start-1:], r.Body)
			n += r.BodySize
		}
		if sha256.Sum256(got) != sha256.Sum256(body) {
			t.Fatal("B reassembled a different 1 MB body")
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		// One relay hop left: Kamailio looks the session up itself and
		// answers 481 when it does not know it.
		bogus := strings.Replace(b.usePath[0], "/msrp-", "/nosuch-", 1)
		_, err := a.Send(ctx, []string{bogus, b.LocalURI()}, msrpclient.Message{Body: []byte("x")})
		var se *msrpclient.StatusError
		if !errors.As(err, &se) || se.Code != 481 {
			t.Fatalf("SEND to an unknown session: err = %v, want a 481 StatusError", err)
		}
	})
	if testing.Verbose() {
		t.Logf("kamailio log:\n%s", k.LogTail(30))
	}
	t.Logf("A stats %+v, B stats %+v", a.Stats(), b.Stats())
}
