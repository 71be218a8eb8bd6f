package relay_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/kamailio"
	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/tracer/event"
)

// Interoperability with a relay nobody here wrote: client A behind
// msrpscope, client B behind Kamailio 5.6's msrp module (the seed's cmap
// configuration). Messages and REPORTs cross both relays in both directions.
func TestKamailioInterop(t *testing.T) {
	k := kamailio.Start(t, kamailio.Config{})
	tr := startRelay(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, err := msrpclient.Dial(ctx, k.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	useB, _, err := b.Auth(ctx, k.URI(), kamailio.User, kamailio.Password, 0)
	if err != nil {
		t.Fatalf("AUTH at Kamailio: %v", err)
	}

	body := []byte("Hello from behind msrpscope\r\n-------fake$\r\n")
	res, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: body, ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND A→B: %+v %v", res, err)
	}
	got := receive(t, b, "SEND")
	if !bytes.Equal(got.Body, body) || got.MessageID != res.MessageID {
		t.Fatalf("B got %q (%s)", got.Body, got.MessageID)
	}
	if !strings.Contains(strings.Join(got.FromPath, " "), useA) {
		t.Fatalf("B's From-Path %q lacks msrpscope's %q", got.FromPath, useA)
	}
	// B's success REPORT comes back through Kamailio and msrpscope.
	rep := receive(t, a, "REPORT")
	if rep.MessageID != res.MessageID || rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("A's REPORT %+v", rep)
	}

	res, err = b.Send(ctx, []string{useB, useA, a.LocalURI()}, msrpclient.Message{Body: []byte("Hi from behind Kamailio"), ContentType: "text/plain", SuccessReport: "yes"})
	if err != nil || res.Chunks[0].Code != 200 {
		t.Fatalf("SEND B→A: %+v %v", res, err)
	}
	if got := receive(t, a, "SEND"); string(got.Body) != "Hi from behind Kamailio" {
		t.Fatalf("A got %+v", got)
	}
	if rep := receive(t, b, "REPORT"); rep.Status == nil || rep.Status.Code != 200 {
		t.Fatalf("B's REPORT %+v", rep)
	}

	// A 256 KB message in 4 KB chunks (Kamailio cannot relay large frames).
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	if _, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: big, ChunkSize: 4 << 10, ContentType: "application/octet-stream"}); err != nil {
		t.Fatal(err)
	}
	var joined []byte
	for len(joined) < len(big) {
		joined = append(joined, receive(t, b, "SEND").Body...)
	}
	if !bytes.Equal(joined, big) {
		t.Fatal("chunked message changed on the way")
	}
	// msrpscope traced its connection to Kamailio.
	tr.obs.waitFor(t, "connected to Kamailio", func(e recEvent) bool {
		return e.kind == event.Connected && e.conn.Remote.String() == k.Addr()
	})
}
