package relay

import (
	"testing"
	"time"
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
		tab.arm(x, now.Add(30*time.Second))
		xs = append(xs, x)
	}
	for _, x := range xs[:990] {
		if tab.take([]byte(x.tid), c) != x {
			t.Fatalf("take %q", x.tid)
		}
	}
	if tab.take([]byte(xs[0].tid), c) != nil {
		t.Fatal("a transaction was taken twice")
	}
	pending := 0
	for _, b := range tab.buckets {
		pending += len(b)
	}
	if pending != 10 || tab.len() != 10 {
		t.Fatalf("%d armed, %d by id after answers; want 10", pending, tab.len())
	}
	if got := tab.expired(now.Add(29*time.Second), nil); len(got) != 0 {
		t.Fatalf("%d expired early", len(got))
	}
	if got := tab.expired(now.Add(31*time.Second), nil); len(got) != 10 || tab.len() != 0 || len(tab.buckets) != 0 {
		t.Fatalf("expired %d, left %d, buckets %d", len(got), tab.len(), len(tab.buckets))
	}
	// A transaction cancelled before it is armed is never armed.
	x := &txn{tid: "late", dst: c}
	tab.register(x)
	if !tab.cancel(x) || tab.cancel(x) {
		t.Fatal("cancel")
	}
	tab.arm(x, now)
	if len(tab.buckets) != 0 {
		t.Fatal("a cancelled transaction was armed")
	}
}
