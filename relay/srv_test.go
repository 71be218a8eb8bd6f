package relay_test

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
)

// dnsZone is a tiny authoritative DNS server on loopback UDP: SRV and A
// records by name (rooted, lower case); other names get NXDOMAIN, other
// types of a known name an empty answer.
type dnsZone struct {
	srv map[string][]dnsmessage.SRVResource
	a   map[string][4]byte
}

func (z *dnsZone) serve(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out, err := z.answer(buf[:n]); err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func (z *dnsZone) answer(q []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, err
	}
	question := qs[0]
	name := strings.ToLower(question.Name.String())
	_, isSRV := z.srv[name]
	_, isA := z.a[name]
	rc := dnsmessage.RCodeSuccess
	if !isSRV && !isA {
		rc = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: rc})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(question); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rh := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch question.Type {
	case dnsmessage.TypeSRV:
		for _, s := range z.srv[name] {
			if err := b.SRVResource(rh, s); err != nil {
				return nil, err
			}
		}
	case dnsmessage.TypeA:
		if a, ok := z.a[name]; ok {
			if err := b.AResource(rh, dnsmessage.AResource{A: a}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

func portOf(t *testing.T, addr string) uint16 {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(ap.Port)
}

// A next hop named by a domain without a port is found by SRV
// (_msrp._tcp.<domain>), lowest priority first; the first target refuses
// the connection, the relay fails over to the next (RFC 4976, RFC 2782).
func TestNextHopBySRV(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := portOf(t, dead.Addr().String())
	dead.Close() // refuses from now on

	r2 := startRelay(t, func(c *relay.Config) {
		c.Listen = []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0", URI: "msrp://relays.test;tcp"}}
	})
	zone := &dnsZone{
		srv: map[string][]dnsmessage.SRVResource{"_msrp._tcp.relays.test.": {
			{Priority: 20, Weight: 10, Port: portOf(t, r2.addr()), Target: dnsmessage.MustNewName("r2.relays.test.")},
			{Priority: 10, Weight: 10, Port: deadPort, Target: dnsmessage.MustNewName("dead.relays.test.")},
		}},
		a: map[string][4]byte{"r2.relays.test.": {127, 0, 0, 1}, "dead.relays.test.": {127, 0, 0, 1}},
	}
	dnsAddr := zone.serve(t)
	r1 := startRelay(t, func(c *relay.Config) { c.Outbound.DNS = dnsAddr })

	a, useA1 := client(t, r1, "alice", msrpclient.Options{})
	b, useB2 := client(t, r2, "bob", msrpclient.Options{})
	useA2, _, err := a.AuthPath(ctxT(t), []string{r1.uri, r2.uri}, "alice", testUsers["alice"], 0)
	if err != nil {
		t.Fatalf("AUTH at R2 (msrp://relays.test) through R1: %v", err)
	}
	if !strings.HasPrefix(useA2, "msrp://relays.test/") {
		t.Fatalf("Use-Path from R2 %q", useA2)
	}
	if _, err := a.Send(ctxT(t), []string{useA1, useA2, useB2, b.LocalURI()}, msrpclient.Message{Body: []byte("found by SRV"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("SEND A→B: %v", err)
	}
	if got := receive(t, b, "SEND"); string(got.Body) != "found by SRV" {
		t.Fatalf("B got %+v", got)
	}
}

// Without SRV records a name without a port is reached by A/AAAA on 2855.
func TestNextHopSRVFallback(t *testing.T) {
	zone := &dnsZone{a: map[string][4]byte{"plain.test.": {127, 0, 0, 1}}}
	dnsAddr := zone.serve(t)
	r1 := startRelay(t, func(c *relay.Config) { c.Outbound.DNS = dnsAddr })
	a, _ := client(t, r1, "alice", msrpclient.Options{})

	t.Run("no SRV: A on 2855", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:2855")
		if err != nil {
			t.Skip("port 2855 busy here:", err)
		}
		ln.Close()
		r2 := startRelay(t, func(c *relay.Config) {
			c.Listen = []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:2855", URI: "msrp://plain.test;tcp"}}
		})
		useA2, _, err := a.AuthPath(ctxT(t), []string{r1.uri, r2.uri}, "alice", testUsers["alice"], 0)
		if err != nil || !strings.HasPrefix(useA2, "msrp://plain.test/") {
			t.Fatalf("AUTH at plain.test through R1: %q %v", useA2, err)
		}
	})
}
