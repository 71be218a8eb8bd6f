package relay_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
)

// Write batching across a chain: A on R1, authenticated at R2 through R1,
// pipelines messages to B on R2 (many in flight, some chunked larger than
// a connection's buffer). On the R1 → R2 connection R1 forwards SENDs
// while R2 writes its 200s back on the same connection from its read
// loop. B gets every chunk whole, each message once and in order, and A
// gets every 200.
func TestChainPipelinedInOrder(t *testing.T) {
	const n = 300
	r1 := startRelay(t, nil)
	r2 := startRelay(t, nil)
	a, useA1 := client(t, r1, "alice", msrpclient.Options{Window: 64})
	b, useB2 := client(t, r2, "bob", msrpclient.Options{IncomingQueue: 2 * n})
	useA2, _, err := a.AuthPath(ctxT(t), []string{useA1, r2.uri}, "alice", testUsers["alice"], 0)
	if err != nil {
		t.Fatalf("AUTH at R2 through R1: %v", err)
	}
	useA2 = strings.Fields(useA2)[len(strings.Fields(useA2))-1]
	to := []string{useA1, useA2, useB2, b.LocalURI()}
	body := func(k int) []byte {
		size := 30 + k%11
		if k%40 == 39 {
			size = 100 << 10 // three chunks of 40 KiB, one larger than a write buffer
		}
		return bytes.Repeat([]byte(fmt.Sprintf("m%04d.", k)), size/6+1)[:size]
	}
	pend := make([]*msrpclient.Pending, n)
	for k := range n {
		p, err := a.SendAsync(ctxT(t), to, msrpclient.Message{MessageID: fmt.Sprintf("m%04d", k), Body: body(k), ContentType: "text/plain", ChunkSize: 40 << 10})
		if err != nil {
			t.Fatalf("SEND %d: %v", k, err)
		}
		pend[k] = p
	}
	for k := 0; k < n; {
		r := receive(t, b, "SEND")
		if r.MessageID != fmt.Sprintf("m%04d", k) {
			t.Fatalf("B got %s, want m%04d", r.MessageID, k)
		}
		want := body(k)
		start := r.ByteRange.Start
		if r.Flag != '$' && r.Flag != '+' || start < 1 || int(start-1)+len(r.Body) > len(want) || !bytes.Equal(r.Body, want[start-1:int(start-1)+len(r.Body)]) {
			t.Fatalf("message %d: chunk %+v of %d bytes, flag %q, differs", k, r.ByteRange, len(r.Body), r.Flag)
		}
		if r.Flag == '$' {
			k++
		}
	}
	for k, p := range pend {
		res, err := p.Wait(ctxT(t))
		if err != nil {
			t.Fatalf("SEND %d: %v", k, err)
		}
		for _, c := range res.Chunks {
			if c.Code != 200 {
				t.Fatalf("SEND %d chunk %+v: %d", k, c.ByteRange, c.Code)
			}
		}
	}
}
