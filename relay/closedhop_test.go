package relay_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// closingHop is a next hop that reads one request whole and closes the
// connection without answering.
func closingHop(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				rd := msrp.NewReader(bufio.NewReader(nc), msrp.Limits{})
				if f, err := rd.ReadFrame(); err == nil {
					_, _ = f.Body().WriteTo(discard{})
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A next hop that closes its connection after the relay forwarded a
// request fails the request at once, not at transaction_timeout: the
// SEND's sender gets a 408 REPORT, an AUTH's sender a 408 response
// (issue 15 defect 5). The bound is far below transaction_timeout (60s).
func TestNextHopClosedFailsPendingAtOnce(t *testing.T) {
	tr := startRelay(t, func(c *relay.Config) { c.Limits.TransactionTimeout = 60 * time.Second })
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	bound := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	t.Run("SEND", func(t *testing.T) {
		ctx := bound(t)
		res, err := a.Send(ctx, []string{useA, "msrp://" + closingHop(t) + "/hop;tcp"}, msrpclient.Message{Body: []byte("hi"), ContentType: "text/plain"})
		if err != nil || res.Chunks[0].Code != 200 {
			t.Fatalf("SEND: %+v %v", res, err)
		}
		select {
		case rep := <-a.Incoming():
			if rep.Method != "REPORT" || rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != 408 {
				t.Fatalf("got %s %+v, want a 408 REPORT", rep.Method, rep.Status)
			}
		case <-ctx.Done():
			t.Fatal("no failure REPORT within 20s (transaction_timeout 60s)")
		}
	})
	t.Run("AUTH", func(t *testing.T) {
		_, _, err := a.AuthPath(bound(t), []string{tr.uri, "msrp://" + closingHop(t) + ";tcp"}, "alice", testUsers["alice"], 0)
		if err == nil {
			t.Fatal("AUTH through a closing next hop succeeded")
		}
		if code := statusCode(t, err); code != 408 {
			t.Fatalf("AUTH: %v, want 408", err)
		}
	})
}
