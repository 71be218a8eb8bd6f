package relay

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// A next hop that answers a SEND with an error at once, the moment the
// frame reaches it, while the forwarding read loop is still finishing
// that forward: the failure REPORT built from the transaction (its
// Byte-Range made up from the body length the forward records, the SEND
// carrying none) must not race with that record, and every REPORT names
// the whole chunk. Run with -race; one SEND at a time, so that each frame
// is flushed as it is forwarded (no batching).
func TestReviewEarlyErrorResponseReport(t *testing.T) {
	const n = 1000
	b := newBatchRelay(t, 2, nil)
	hopErr := make(chan error, 1)
	go func() {
		rd := msrp.NewReader(bufio.NewReader(b.ncs[1]), msrp.Limits{})
		for k := 0; k < n; k++ {
			f, err := rd.ReadFrame()
			if err != nil {
				hopErr <- err
				return
			}
			to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
			if _, err := fmt.Fprintf(b.ncs[1], "MSRP %s 486 Busy Here\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n",
				f.TransactID, to, f.Get(msrp.HdrToPath), f.TransactID); err != nil {
				hopErr <- err
				return
			}
			for p := f.Body(); ; {
				if _, err := p.Next(); err != nil {
					break
				}
			}
		}
		hopErr <- nil
	}()
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(60 * time.Second))
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	body := strings.Repeat("q", 57)
	reports := 0
	for k := 0; k < n; k++ {
		s := string(b.send(0, 1, fmt.Sprintf("m%d", k), []byte(body)))
		s = strings.Replace(s, "Byte-Range: 1-57/57\r\n", "", 1)
		if _, err := io.WriteString(b.ncs[0], s); err != nil {
			t.Fatal(err)
		}
		// The relay's 200, and the REPORT (in either order).
		for got200 := false; !got200; {
			f, err := rd.ReadFrame()
			if err != nil {
				t.Fatalf("SEND %d: %v", k, err)
			}
			switch {
			case f.StatusCode == 200:
				got200 = true
			case string(f.Method) == "REPORT":
				reports++
				if br := string(f.Get(msrp.HdrByteRange)); br != "1-57/57" {
					t.Fatalf("REPORT %d Byte-Range %q, want 1-57/57", reports, br)
				}
				if st := string(f.Get(msrp.HdrStatus)); !strings.HasPrefix(st, "000 486") {
					t.Fatalf("REPORT Status %q", st)
				}
			default:
				t.Fatalf("unexpected frame %q %d", f.Method, f.StatusCode)
			}
			for p := f.Body(); ; {
				if _, err := p.Next(); err != nil {
					break
				}
			}
		}
	}
	for reports < n {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatalf("after %d REPORTs: %v", reports, err)
		}
		if string(f.Method) != "REPORT" {
			t.Fatalf("unexpected frame %q %d", f.Method, f.StatusCode)
		}
		if br := string(f.Get(msrp.HdrByteRange)); br != "1-57/57" {
			t.Fatalf("REPORT %d Byte-Range %q, want 1-57/57", reports, br)
		}
		reports++
	}
	if err := <-hopErr; err != nil {
		t.Fatal(err)
	}
}

// A source that breaks off in the middle of a body (here it closes): the
// relay ends the forwarded chunk with '#' and the next hop, hostile or
// slow, never answers it. The transaction must still expire at
// transaction_timeout (and its pooled txn go back), not stay in the table
// for as long as the next hop's connection lives; nor may the next hop
// count as awaiting responses for ever (a graceful shutdown waits for it).
func TestReviewAbortedForwardExpires(t *testing.T) {
	b := newBatchRelay(t, 2, func(c *Config) { c.Limits.TransactionTimeout = time.Second })
	go func() { _, _ = io.Copy(io.Discard, b.ncs[1]) }() // reads, never answers
	s := string(b.send(0, 1, "cut", []byte(strings.Repeat("c", 5000))))
	if _, err := io.WriteString(b.ncs[0], s[:len(s)-3000]); err != nil {
		t.Fatal(err)
	}
	// The transaction is registered once the relay forwards the header.
	until := time.Now().Add(20 * time.Second)
	for b.r.txns.len() == 0 {
		if time.Now().After(until) {
			t.Fatal("the SEND was never forwarded")
		}
		<-time.After(5 * time.Millisecond)
	}
	_ = b.ncs[0].Close() // the body breaks off
	until = time.Now().Add(20 * time.Second)
	for b.r.txns.len() != 0 {
		if time.Now().After(until) {
			t.Fatalf("%d transactions still pending 20 s after a transaction_timeout of 1 s", b.r.txns.len())
		}
		<-time.After(20 * time.Millisecond)
	}
}

// Hostile next hops around pooled transactions: each answers the
// transact-ids the other received (responses from the wrong connection),
// answers its own twice, some after transaction_timeout (late, after the
// failure REPORT), some with an error status (a REPORT built from the
// txn while other responses come). No REPORT may carry anything but a
// Message-ID that was sent (a recycled txn's strings would show), no
// answer from the wrong connection may match, and the table ends empty.
func TestReviewHostileResponsesPooledTxns(t *testing.T) {
	const n = 300
	b := newBatchRelay(t, 3, func(c *Config) { c.Limits.TransactionTimeout = time.Second })
	type rx struct {
		tid  string
		to   []byte
		from []byte
		k    int
	}
	recv := [2]chan rx{make(chan rx, n), make(chan rx, n)}
	for h := range 2 {
		go func() {
			rd := msrp.NewReader(bufio.NewReader(b.ncs[1+h]), msrp.Limits{})
			for {
				f, err := rd.ReadFrame()
				if err != nil {
					close(recv[h])
					return
				}
				to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
				var k int
				_, _ = fmt.Sscanf(string(f.Get(msrp.HdrMessageID)), "m%d", &k)
				recv[h] <- rx{string(f.TransactID), append([]byte(nil), to...), append([]byte(nil), f.Get(msrp.HdrToPath)...), k}
				for p := f.Body(); ; {
					if _, err := p.Next(); err != nil {
						break
					}
				}
			}
		}()
	}
	answer := func(h int, x rx, code int) {
		_, _ = fmt.Fprintf(b.ncs[1+h], "MSRP %s %d X\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", x.tid, code, x.to, x.from, x.tid)
	}
	// The hops: every frame is first answered by the other hop (wrong
	// connection), then by its own: error for k%5==1, late for k%5==2,
	// twice otherwise.
	hopsDone := make(chan struct{})
	go func() {
		defer close(hopsDone)
		var late []func()
		got := 0
		for got < n {
			var x rx
			var h int
			var ok bool
			select {
			case x, ok = <-recv[0]:
				h = 0
			case x, ok = <-recv[1]:
				h = 1
			}
			if !ok {
				return
			}
			got++
			answer(1-h, x, 200)
			switch x.k % 5 {
			case 1:
				answer(h, x, 486)
				answer(h, x, 200)
			case 2:
				late = append(late, func() { answer(h, x, 200) })
			default:
				answer(h, x, 200)
				answer(h, x, 200)
			}
		}
		// The late answers, once the relay has expired them.
		until := time.Now().Add(30 * time.Second)
		for b.r.txns.len() > 0 && time.Now().Before(until) {
			<-time.After(20 * time.Millisecond)
		}
		for _, f := range late {
			f()
		}
	}()
	sent := map[string]bool{}
	var stream []byte
	for k := range n {
		mid := fmt.Sprintf("m%d", k)
		sent[mid] = true
		s := string(b.send(0, 1+k%2, mid, []byte("payload "+mid)))
		stream = append(stream, s...)
	}
	go func() { _, _ = b.ncs[0].Write(stream) }()
	// A: n 200s from the relay, and REPORTs for the 486s and the late ones.
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(60 * time.Second))
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	oks, reports := 0, 0
	wantReports := 0
	for k := range n {
		if k%5 == 1 || k%5 == 2 {
			wantReports++
		}
	}
	for oks < n || reports < wantReports {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatalf("after %d 200s and %d REPORTs: %v", oks, reports, err)
		}
		switch {
		case f.StatusCode == 200:
			oks++
		case string(f.Method) == "REPORT":
			reports++
			mid := string(f.Get(msrp.HdrMessageID))
			if !sent[mid] {
				t.Fatalf("REPORT for Message-ID %q, never sent", mid)
			}
			var k int
			_, _ = fmt.Sscanf(mid, "m%d", &k)
			st := string(f.Get(msrp.HdrStatus))
			if k%5 == 1 && !strings.HasPrefix(st, "000 486") || k%5 == 2 && !strings.HasPrefix(st, "000 408") || k%5 > 2 || k%5 == 0 {
				t.Fatalf("REPORT for %s with Status %q", mid, st)
			}
		default:
			t.Fatalf("unexpected %q %d", f.Method, f.StatusCode)
		}
		for p := f.Body(); ; {
			if _, err := p.Next(); err != nil {
				break
			}
		}
	}
	<-hopsDone
	if got := b.r.stats.unmatchedResponses.Load(); got < n {
		t.Fatalf("%d unmatched responses, want at least %d (the wrong connection's)", got, n)
	}
	if l := b.r.txns.len(); l != 0 {
		t.Fatalf("%d transactions left", l)
	}
}

// RFC 4976 §6.4.1: the transaction timer starts once the last byte of the
// request is sent. A small SEND whose body arrives slowly (a slow link,
// within body_timeout and body_min_rate) must not be timed from its first
// byte: the next hop's 200, coming well within transaction_timeout of
// the last byte, must still match, and the sender gets no failure REPORT.
func TestReviewTxnTimerFromLastByte(t *testing.T) {
	const tt = time.Second
	b := newBatchRelay(t, 2, func(c *Config) { c.Limits.TransactionTimeout = tt })
	ans := make(chan error, 1)
	go func() { // the next hop answers half a transaction_timeout after the last byte
		ans <- b.answer(t, 1, 1, func(*msrp.Frame, []byte) error { <-time.After(tt / 2); return nil })
	}()
	s := b.send(0, 1, "slow", []byte(strings.Repeat("s", 2000)))
	half := len(s) - 1000
	if _, err := b.ncs[0].Write(s[:half]); err != nil {
		t.Fatal(err)
	}
	<-time.After(3 * tt) // the link is slow: the rest comes later
	if _, err := b.ncs[0].Write(s[half:]); err != nil {
		t.Fatal(err)
	}
	if err := <-ans; err != nil {
		t.Fatal(err)
	}
	// The relay's 200 to the sender, then nothing for a while (a REPORT
	// would come within a sweep tick of the expiry).
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if f, err := rd.ReadFrame(); err != nil || f.StatusCode != 200 {
		t.Fatalf("the relay's response: %v", err)
	}
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(2 * tt))
	if f, err := rd.ReadFrame(); err == nil {
		t.Fatalf("the sender got %s %s %s", f.Method, f.Get(msrp.HdrStatus), f.Get(msrp.HdrMessageID))
	}
	if n := b.r.stats.txnTimeouts.Load(); n != 0 {
		t.Fatalf("%d transaction timeouts", n)
	}
}
