package relay

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Answered transactions leave the timing wheel at once; unanswered ones
// expire after their deadline, not before.
func TestTxnTable(t *testing.T) {
	tab := newTxnTable()
	c := &conn{}
	now := time.Unix(1700000000, 0)
	var xs []*txn
	for i := range 1000 {
		x := &txn{tid: string(rune('a'+i%26)) + string(rune('A'+i/26%26)) + string(rune('0'+i/676))}
		x.dst = c
		tab.register(x)
		tab.arm(x, now.Add(30*time.Second), 0, 0, time.Time{})
		xs = append(xs, x)
	}
	// The transactions spread over the shards.
	for i := range tab.shards {
		if len(tab.shards[i].byTID) < 1000/txnShards/3 {
			t.Fatalf("shard %d holds %d of 1000 transactions", i, len(tab.shards[i].byTID))
		}
	}
	for _, x := range xs[:990] {
		if tab.take([]byte(x.tid), c) != x {
			t.Fatalf("take %q", x.tid)
		}
	}
	if tab.take([]byte(xs[0].tid), c) != nil {
		t.Fatal("a transaction was taken twice")
	}
	if pending := tab.armed(); pending != 10 || tab.len() != 10 {
		t.Fatalf("%d armed, %d by id after answers; want 10", pending, tab.len())
	}
	if got := tab.expired(now.Add(29*time.Second), nil); len(got) != 0 {
		t.Fatalf("%d expired early", len(got))
	}
	if got := tab.expired(now.Add(31*time.Second), nil); len(got) != 10 || tab.len() != 0 || tab.armed() != 0 {
		t.Fatalf("expired %d, left %d, armed %d", len(got), tab.len(), tab.armed())
	}
	// A transaction cancelled before it is armed is never armed.
	x := &txn{tid: "late", dst: c}
	tab.register(x)
	if !tab.cancel(x) || tab.cancel(x) {
		t.Fatal("cancel")
	}
	tab.arm(x, now, 0, 0, time.Time{})
	if tab.armed() != 0 {
		t.Fatal("a cancelled transaction was armed")
	}
}

// armed counts the transactions in the timing wheel.
func (t *txnTable) armed() int {
	n := 0
	for i := range t.shards {
		for _, x := range t.shards[i].wheel {
			for ; x != nil; x = x.wnext {
				n++
			}
		}
	}
	return n
}

// The wheel's slots are shared by deadlines txnSlots ticks apart: a
// timeout longer than the wheel, a sweep after a long pause and a deadline
// in a tick already swept each expire when due, not before, and not never.
func TestTxnWheel(t *testing.T) {
	now := time.Unix(1700000000, 0)
	wheel := txnSlots * txnTick
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		sweeps  []time.Duration // expired calls before the deadline, after now
		late    time.Duration   // the call that must find it, after the deadline
	}{
		{"within the wheel", 30 * time.Second, []time.Duration{time.Second, 29 * time.Second}, time.Second},
		{"longer than the wheel", wheel + 10*time.Second, []time.Duration{time.Second, 10 * time.Second, wheel, wheel + 9*time.Second}, time.Second},
		{"three turns", 3*wheel + time.Second, []time.Duration{wheel + time.Second, 2*wheel + time.Second, 3 * wheel}, time.Second},
		{"a long pause before the sweep", 30 * time.Second, nil, 5*wheel + 3*time.Second},
		{"an hour", time.Hour, []time.Duration{30 * time.Minute, time.Hour - time.Second}, 3 * wheel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTxnTable()
			tab.expired(now, nil)
			c := &conn{}
			x := &txn{tid: "x", dst: c}
			tab.register(x)
			tab.arm(x, now.Add(tc.timeout), 0, 0, time.Time{})
			for _, d := range tc.sweeps {
				if got := tab.expired(now.Add(d), nil); len(got) != 0 {
					t.Fatalf("expired at +%v, deadline +%v", d, tc.timeout)
				}
			}
			if got := tab.expired(now.Add(tc.timeout+tc.late), nil); len(got) != 1 || got[0] != x {
				t.Fatalf("not expired %v after its deadline (+%v): %d", tc.late, tc.timeout, len(got))
			}
			if tab.len() != 0 || tab.armed() != 0 {
				t.Fatalf("left %d, armed %d", tab.len(), tab.armed())
			}
		})
	}
	// A deadline in a tick already swept (a clock behind the sweeper's)
	// expires at the next sweep.
	tab := newTxnTable()
	tab.expired(now.Add(time.Minute), nil)
	x := &txn{tid: "behind", dst: &conn{}}
	tab.register(x)
	tab.arm(x, now.Add(time.Second), 0, 0, time.Time{})
	if got := tab.expired(now.Add(time.Minute+txnTick), nil); len(got) != 1 {
		t.Fatalf("a deadline in a swept tick: %d expired", len(got))
	}
}

// Pooled transactions are recycled once every user is done with them, on
// each path that ends one: a 200, an error response (failure REPORT), the
// next hop closing with transactions pending (failure REPORTs at once).
// The REPORTs carry the SEND's Message-ID and From-Path, read from the
// transaction: a transaction recycled while still in use would have its
// strings poisoned under -race (txn.release), and the race detector would
// report the reuse. At the end no transaction is live (none leaked, none
// released twice: that panics).
func TestTxnRecycled(t *testing.T) {
	live0 := txnsLive.Load()
	p := newBenchPair(t, true, nil)
	for range 5 {
		p.burst(t, 64)
	}
	fromA := bytes.SplitN(bytes.SplitN(p.send, []byte("From-Path: "), 2)[1], []byte("\r\n"), 2)[0]
	want := func(f *msrp.Frame, what string) {
		if string(f.Method) != "REPORT" || string(f.Get(msrp.HdrMessageID)) != "87652491" || !bytes.Equal(f.Get(msrp.HdrToPath), fromA) {
			t.Fatalf("%s: REPORT %q Message-ID %q To-Path %q", what, f.Method, f.Get(msrp.HdrMessageID), f.Get(msrp.HdrToPath))
		}
	}
	// 64 in flight, B answers every other one 481: 32 failure REPORTs.
	send64 := bytes.Repeat(p.send, 64)
	if _, err := p.a.Write(send64); err != nil {
		t.Fatal(err)
	}
	var resp []byte
	for i := range 64 {
		f, err := p.br.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		code := "200 OK"
		if i%2 == 1 {
			code = "481 Session does not exist"
		}
		to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
		resp = fmt.Appendf(resp, "MSRP %s %s\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n", f.TransactID, code, to, f.Get(msrp.HdrToPath), f.TransactID)
		drain(t, f)
	}
	if _, err := p.b.Write(resp); err != nil {
		t.Fatal(err)
	}
	reports := 0
	for oks := 0; oks < 64 || reports < 32; {
		f, err := p.ar.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.IsRequest() {
			want(f, "481")
			reports++
		} else {
			oks++
		}
		drain(t, f)
	}
	// 64 more; B reads them and closes without answering: 64 REPORTs.
	if _, err := p.a.Write(send64); err != nil {
		t.Fatal(err)
	}
	for range 64 {
		f, err := p.br.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		drain(t, f)
	}
	_ = p.b.Close()
	reports = 0
	for oks := 0; oks < 64 || reports < 64; {
		f, err := p.ar.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.IsRequest() {
			want(f, "next hop closed")
			reports++
		} else {
			oks++
		}
		drain(t, f)
	}
	// The last releases follow the REPORTs' queueing: wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for p.r.Stats().Transactions != 0 || txnsLive.Load() != live0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d transactions pending, %d live after all ended", p.r.Stats().Transactions, txnsLive.Load()-live0)
		}
		runtime.Gosched()
	}
}
