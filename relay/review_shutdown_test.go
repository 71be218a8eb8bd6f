package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// A graceful shutdown (SIGTERM) that begins while a source's burst is
// being relayed, frames batched in the destination's buffer: every SEND
// the relay acknowledged with 200 reaches the destination whole or its
// sender gets a failure REPORT, and the relay's shutdown completes.
//
// The relay's 200 to a SEND means receipt, not delivery (RFC 4976 §6.4.1,
// RFC 4975 §7.1.2): a SEND whose first byte is read after the shutdown
// began is not relayed and gets its 200 and a failure REPORT (408, route.go
// refusesNew), as TestShutdownUnderLoad checks too. Only a 200 with neither
// delivery nor REPORT is lost data.
func TestReviewShutdownDuringBurstDeliversAcknowledged(t *testing.T) {
	const n = 400
	obs := &benchObserver{accepted: make(chan netip.AddrPort, 2)}
	cfg := Config{Listen: []Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}}, Users: auth.NewUsers(),
		Logger: slog.New(slog.DiscardHandler), Observer: obs}
	cfg.Limits.FirstRequestTimeout = time.Hour // sessions made in the table, not by AUTH: as newBatchRelay
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	b := &batchRelay{r: r}
	for i := range 2 {
		nc, err := net.Dial("tcp", r.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		local := addrPort(nc.LocalAddr())
		<-obs.accepted
		var c *conn
		r.mu.Lock()
		for _, x := range r.conns {
			if x.info.Remote == local {
				c = x
			}
		}
		r.mu.Unlock()
		sid := "sess" + strconv.Itoa(i)
		prev, _ := msrp.ParseURI(b.uriOf(nc))
		if err := r.sessions.add(&session{id: sid, user: sid, conn: c, prevHop: prev, expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		c.requestOK.Store(true)
		b.ncs, b.sids = append(b.ncs, nc), append(b.sids, sid)
	}
	var stream []byte
	for k := range n {
		stream = append(stream, b.send(0, 1, "m"+strconv.Itoa(k), bodyFor(0, k))...)
	}
	// B: reads and answers every SEND until the relay closes it.
	type result struct {
		n   int
		err error
	}
	bRes := make(chan result, 1)
	go func() {
		_ = b.ncs[1].SetReadDeadline(time.Now().Add(60 * time.Second))
		rd := msrp.NewReader(bufio.NewReaderSize(b.ncs[1], 32<<10), msrp.Limits{})
		got := 0
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				_ = b.ncs[1].Close() // the relay's graceful close waits for ours (closeLinger)
				bRes <- result{got, err}
				return
			}
			body, _ := io.ReadAll(f.Body()) // up to the end-line or an error
			if f.Flag() != msrp.FlagEnd {
				bRes <- result{got, errors.New("a frame not whole: flag " + string(f.Flag()))}
				return
			}
			if want := string(bodyFor(0, got)); string(f.Get(msrp.HdrMessageID)) != "m"+strconv.Itoa(got) || string(body) != want {
				bRes <- result{got, errors.New("frame " + strconv.Itoa(got) + " out of order or damaged: " + string(f.Get(msrp.HdrMessageID)))}
				return
			}
			got++
			to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
			_, _ = io.WriteString(b.ncs[1], "MSRP "+string(f.TransactID)+" 200 OK\r\nTo-Path: "+string(to)+"\r\nFrom-Path: "+
				string(f.Get(msrp.HdrToPath))+"\r\n-------"+string(f.TransactID)+"$\r\n")
		}
	}()
	// A: counts the relay's 200s and collects its failure REPORTs until the
	// relay closes it. The relay answers A's SENDs in the order it read
	// them: the k-th 200 is m<k>'s.
	aRes := make(chan result, 1)
	failed := map[string]string{} // Message-ID → the REPORT's Status; A's goroutine's until aRes
	go func() {
		_ = b.ncs[0].SetReadDeadline(time.Now().Add(60 * time.Second))
		rd := msrp.NewReader(bufio.NewReaderSize(b.ncs[0], 32<<10), msrp.Limits{})
		ok := 0
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				_ = b.ncs[0].Close()
				aRes <- result{ok, nil}
				return
			}
			switch {
			case f.StatusCode == 200:
				ok++
			case f.StatusCode != 0:
				aRes <- result{ok, errors.New("a response " + strconv.Itoa(f.StatusCode))}
				return
			case string(f.Method) == "REPORT":
				st := string(f.Get(msrp.HdrStatus))
				if st == "" || st == "000 200 OK" {
					aRes <- result{ok, errors.New("a REPORT that is no failure: Status " + st)}
					return
				}
				failed[string(f.Get(msrp.HdrMessageID))] = st
			}
			for p := f.Body(); ; {
				if _, err := p.Next(); err != nil {
					break
				}
			}
		}
	}()
	go func() { _, _ = b.ncs[0].Write(stream) }()
	// Shut down once some of the burst has been relayed.
	until := time.Now().Add(20 * time.Second)
	for r.stats.forwarded.Load() < n/4 {
		if time.Now().After(until) {
			t.Fatal("the burst was not relayed")
		}
		<-time.After(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
		done <- nil
	case <-time.After(60 * time.Second):
		t.Fatal("shutdown did not complete")
	}
	a, bb := <-aRes, <-bRes
	if bb.err != nil {
		t.Fatalf("destination after %d frames: %v", bb.n, bb.err)
	}
	if a.err != nil {
		t.Fatalf("source after %d 200s: %v", a.n, a.err)
	}
	// B checked the order: it got m0 to m<bb.n-1>. The rest acknowledged
	// must each have its failure REPORT.
	for k := bb.n; k < a.n; k++ {
		if _, ok := failed["m"+strconv.Itoa(k)]; !ok {
			t.Fatalf("the relay acknowledged %d SENDs, the destination got %d, m%d got no failure REPORT (REPORTs: %v)", a.n, bb.n, k, failed)
		}
	}
	t.Logf("acknowledged %d, delivered %d of %d, failure REPORTs %v", a.n, bb.n, n, failed)
}

// A graceful shutdown that begins while a source's SEND is being read, its
// header not all in yet, the destination idle (no response awaited on it,
// nothing written to it yet): the destination keeps reading until that
// frame in flight has been relayed and answered, so it is delivered, not
// failed because its next hop closed under it ("connections finish the
// frame they are in", Serve).
func TestShutdownKeepsDestinationForFrameInFlight(t *testing.T) {
	b := newBatchRelay(t, 2, nil)
	frame := b.send(0, 1, "m0", []byte("hello"))
	if _, err := b.ncs[0].Write(frame[:20]); err != nil { // in its start line
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		for until := time.Now().Add(20 * time.Second); !cond(); {
			if time.Now().After(until) {
				t.Fatal(what)
			}
			<-time.After(time.Millisecond) // polling a state, not ordering events
		}
	}
	waitFor("the source's frame was not begun", func() bool { return b.r.framing.Load() == 1 })
	q0 := b.r.quietRuns.Load()
	b.stop()
	// Several of the shutdown's passes, each of which wakes an idle
	// connection that may stop and closes one whose read loop ended.
	waitFor("the shutdown made no passes", func() bool { return b.r.quietRuns.Load() >= q0+5 })
	if _, err := b.ncs[0].Write(frame[20:]); err != nil {
		t.Fatal(err)
	}
	// B gets the SEND whole and answers it.
	_ = b.ncs[1].SetReadDeadline(time.Now().Add(30 * time.Second))
	f, err := msrp.NewReader(bufio.NewReader(b.ncs[1]), msrp.Limits{}).ReadFrame()
	if err != nil {
		t.Fatalf("the destination got no frame: %v", err)
	}
	body, _ := io.ReadAll(f.Body()) // up to the end-line or an error
	if string(f.Method) != "SEND" || string(f.Get(msrp.HdrMessageID)) != "m0" || string(body) != "hello" || f.Flag() != msrp.FlagEnd {
		t.Fatalf("the destination got %s %s %q flag %q", f.Method, f.Get(msrp.HdrMessageID), body, f.Flag())
	}
	to, _ := msrp.SplitPath(f.Get(msrp.HdrFromPath))
	if _, err := io.WriteString(b.ncs[1], "MSRP "+string(f.TransactID)+" 200 OK\r\nTo-Path: "+string(to)+"\r\nFrom-Path: "+
		string(f.Get(msrp.HdrToPath))+"\r\n-------"+string(f.TransactID)+"$\r\n"); err != nil {
		t.Fatal(err)
	}
	// A gets its 200 and no failure REPORT before the relay closes it.
	_ = b.ncs[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	rd := msrp.NewReader(bufio.NewReader(b.ncs[0]), msrp.Limits{})
	var got []string
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			break
		}
		got = append(got, strconv.Itoa(f.StatusCode)+" "+string(f.Method)+" "+string(f.Get(msrp.HdrStatus)))
		for p := f.Body(); ; {
			if _, err := p.Next(); err != nil {
				break
			}
		}
	}
	if len(got) != 1 || got[0] != "200  " {
		t.Fatalf("the source got %q, want its 200 alone", got)
	}
	for _, nc := range b.ncs {
		_ = nc.Close() // the relay's graceful close waits for ours (closeLinger)
	}
	if err := <-b.done; err != nil {
		t.Fatal(err)
	}
	b.done <- nil // for the cleanup
}
