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
