package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"
)

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server string
		wantC, wantS   string // as decoded
		is6            bool
	}{
		{"ipv4", "192.0.2.1:49152", "198.51.100.7:2855", "192.0.2.1:49152", "198.51.100.7:2855", false},
		{"ipv6", "[2001:db8::1]:50000", "[2001:db8::2]:2855", "[2001:db8::1]:50000", "[2001:db8::2]:2855", true},
		{"ipv4-mapped", "[::ffff:192.0.2.1]:49152", "[::ffff:198.51.100.7]:7777", "192.0.2.1:49152", "198.51.100.7:7777", false},
		{"ipv6-zone", "[fe80::1%eth0]:5000", "[fe80::2%eth0]:6000", "[fe80::1]:5000", "[fe80::2]:6000", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustOpen(t, Config{Dir: dir})
			c, s := netip.MustParseAddrPort(tc.client), netip.MustParseAddrPort(tc.server)
			big := randBytes(200_000, 1)
			sent := []struct {
				fromClient bool
				b          []byte
			}{
				{true, []byte("MSRP a SEND\r\n-------a$\r\n")},
				{false, []byte("MSRP a 200 OK\r\n-------a$\r\n")},
				{true, big},
				{false, []byte("x")},
			}
			ok(t, w.ConnOpen(t0, c, s))
			for i, d := range sent {
				ts := t0.Add(time.Duration(i+1) * time.Millisecond)
				if d.fromClient {
					ok(t, w.Data(ts, c, s, d.b))
				} else {
					ok(t, w.Data(ts, s, c, d.b))
				}
			}
			ok(t, w.ConnClose(t0.Add(time.Second), c, s))
			if st := w.Stats(); st.Flows != 0 {
				t.Errorf("flows after close = %d", st.Flows)
			}
			ok(t, w.Close())

			files := ourPcaps(t, dir, DefaultPrefix)
			if len(files) != 1 {
				t.Fatalf("files %v", files)
			}
			pkts := readPcap(t, files[0])
			wantC, wantS := netip.MustParseAddrPort(tc.wantC), netip.MustParseAddrPort(tc.wantS)
			segs := (len(big) + DefaultSegmentSize - 1) / DefaultSegmentSize
			if want := 3 + 3 + segs + 3; len(pkts) != want {
				t.Fatalf("%d packets, want %d", len(pkts), want)
			}
			for i, p := range pkts {
				if p.is6 != tc.is6 {
					t.Fatalf("packet %d: is6=%v", i, p.is6)
				}
				if !(p.src == wantC && p.dst == wantS) && !(p.src == wantS && p.dst == wantC) {
					t.Fatalf("packet %d: %v -> %v", i, p.src, p.dst)
				}
				if len(p.payload) > DefaultSegmentSize {
					t.Fatalf("packet %d: %d payload bytes", i, len(p.payload))
				}
			}
			var got []string
			for _, i := range []int{0, 1, 2, len(pkts) - 3, len(pkts) - 2, len(pkts) - 1} {
				dir := "c"
				if pkts[i].src == wantS {
					dir = "s"
				}
				got = append(got, dir+pkts[i].flags())
			}
			if g, w := strings.Join(got, " "), "cS sSA cA cFA sFA cA"; g != w {
				t.Errorf("handshake/close flags %q, want %q", g, w)
			}
			if !pkts[0].ts.Equal(t0) || !pkts[len(pkts)-1].ts.Equal(t0.Add(time.Second)) {
				t.Errorf("timestamps %v .. %v", pkts[0].ts, pkts[len(pkts)-1].ts)
			}
			data := streams(t, pkts)
			var wantCS, wantSC []byte
			for _, d := range sent {
				if d.fromClient {
					wantCS = append(wantCS, d.b...)
				} else {
					wantSC = append(wantSC, d.b...)
				}
			}
			if !bytes.Equal(data[wantC.String()+">"+wantS.String()], wantCS) {
				t.Error("client->server stream differs")
			}
			if !bytes.Equal(data[wantS.String()+">"+wantC.String()], wantSC) {
				t.Error("server->client stream differs")
			}
		})
	}
}

func TestSegmentation(t *testing.T) {
	for _, tc := range []struct {
		seg, n int
		v6     bool
	}{
		{1, 3000, false},
		{100, 200_000, true},
		{1460, 200_000, false},
		{1460, 1460, false},
		{1460, 1461, true},
		{MaxSegmentSize, 200_000, false},
		{MaxSegmentSize, 200_000, true},
	} {
		t.Run(fmt.Sprintf("seg%d-n%d-v6=%v", tc.seg, tc.n, tc.v6), func(t *testing.T) {
			dir := t.TempDir()
			w := mustOpen(t, Config{Dir: dir, SegmentSize: tc.seg})
			src, dst := netip.MustParseAddrPort("10.1.1.1:1000"), netip.MustParseAddrPort("10.1.1.2:2000")
			if tc.v6 {
				src, dst = netip.MustParseAddrPort("[2001:db8::a]:1000"), netip.MustParseAddrPort("[2001:db8::b]:2000")
			}
			payload := randBytes(tc.n, uint64(tc.seg))
			ok(t, w.Data(t0, src, dst, payload))
			ok(t, w.Close())
			pkts := readPcap(t, ourPcaps(t, dir, DefaultPrefix)[0])
			if want := (tc.n + tc.seg - 1) / tc.seg; len(pkts) != want {
				t.Fatalf("%d packets, want %d", len(pkts), want)
			}
			for i, p := range pkts {
				if len(p.payload) > tc.seg || p.frameLen > 14+65535 {
					t.Fatalf("packet %d: payload %d frame %d", i, len(p.payload), p.frameLen)
				}
			}
			if got := streams(t, pkts)[src.String()+">"+dst.String()]; !bytes.Equal(got, payload) {
				t.Fatalf("reassembled %d bytes differ from %d sent", len(got), len(payload))
			}
		})
	}
}

// Data alone (no ConnOpen) gets implicit state; both directions stay
// consistent, and ConnClose on such a flow continues its numbers.
func TestImplicitFlows(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, Config{Dir: dir})
	a, b := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:6000")
	c, d := netip.MustParseAddrPort("[2001:db8::1]:5000"), netip.MustParseAddrPort("[2001:db8::2]:6000")
	ok(t, w.Data(t0, a, b, []byte("one")))
	ok(t, w.Data(t0, c, d, []byte("v6 one")))
	ok(t, w.Data(t0, b, a, []byte("two")))
	ok(t, w.Data(t0, a, b, []byte("three")))
	ok(t, w.Data(t0, d, c, []byte("v6 two")))
	ok(t, w.Data(t0, a, b, nil)) // writes nothing
	ok(t, w.Flush())
	if st := w.Stats(); st.Flows != 2 || st.Packets != 5 || st.Records != 6 {
		t.Fatalf("stats %+v", st)
	}
	ok(t, w.ConnClose(t0, b, a)) // b as "client": b sends the first FIN
	ok(t, w.Close())
	pkts := readPcap(t, ourPcaps(t, dir, DefaultPrefix)[0])
	if len(pkts) != 8 {
		t.Fatalf("%d packets", len(pkts))
	}
	data := streams(t, pkts)
	for k, want := range map[string]string{
		a.String() + ">" + b.String(): "onethree", b.String() + ">" + a.String(): "two",
		c.String() + ">" + d.String(): "v6 one", d.String() + ">" + c.String(): "v6 two",
	} {
		if string(data[k]) != want {
			t.Errorf("%s: %q, want %q", k, data[k], want)
		}
	}
	if p := pkts[5]; p.src != b || !p.fin {
		t.Errorf("first FIN %+v", p)
	}
}

func TestReopenRestartsSequence(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, Config{Dir: dir})
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:6000")
	ok(t, w.ConnOpen(t0, c, s))
	ok(t, w.Data(t0, c, s, []byte("abc")))
	ok(t, w.ConnOpen(t0, c, s))
	ok(t, w.Close())
	pkts := readPcap(t, ourPcaps(t, dir, DefaultPrefix)[0])
	if len(pkts) != 7 || !pkts[4].syn || pkts[4].seq == pkts[0].seq {
		t.Fatalf("second SYN %+v (first %+v)", pkts[4], pkts[0])
	}
	streams(t, pkts[4:])
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"total below file", Config{Dir: dir, MaxFileBytes: 2000, MaxTotalBytes: 1000}},
		{"segment too big", Config{Dir: dir, SegmentSize: MaxSegmentSize + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if w, err := Open(tc.cfg); err == nil {
				w.Close()
				t.Fatal("Open succeeded")
			}
		})
	}

	w := mustOpen(t, Config{Dir: t.TempDir()})
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"mixed data", func() error { return w.Data(t0, v4, v6, []byte("x")) }},
		{"mixed open", func() error { return w.ConnOpen(t0, v6, v4) }},
		{"mixed close", func() error { return w.ConnClose(t0, v4, v6) }},
		{"invalid", func() error { return w.Data(t0, netip.AddrPort{}, v4, []byte("x")) }},
	} {
		if err := tc.call(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if st := w.Stats(); st.Errors != 4 || st.Packets != 0 || st.LastError == "" {
		t.Errorf("stats %+v", st)
	}
	ok(t, w.Close())
	ok(t, w.Close())
	for _, err := range []error{w.Data(t0, v4, v4, []byte("x")), w.ConnOpen(t0, v4, v4), w.ConnClose(t0, v4, v4), w.Flush()} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
	}
}

func TestFlowEviction(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, Config{Dir: dir, MaxFlows: 2})
	srv := netip.MustParseAddrPort("10.0.0.9:2855")
	a, b, c := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("10.0.0.3:1")
	ok(t, w.Data(t0, a, srv, []byte("a1")))
	ok(t, w.Data(t0, b, srv, []byte("b1")))
	ok(t, w.Data(t0, a, srv, []byte("a2"))) // a is now the most recently used
	ok(t, w.Data(t0, c, srv, []byte("c1"))) // evicts b
	ok(t, w.Data(t0, a, srv, []byte("a3")))
	if st := w.Stats(); st.Flows != 2 || st.FlowsEvicted != 1 {
		t.Fatalf("stats %+v", st)
	}
	ok(t, w.Close())
	var aPkts []pkt
	for _, p := range readPcap(t, ourPcaps(t, dir, DefaultPrefix)[0]) {
		if p.src == a {
			aPkts = append(aPkts, p)
		}
	}
	if got := string(streams(t, aPkts)[a.String()+">"+srv.String()]); got != "a1a2a3" {
		t.Fatalf("a stream %q", got)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, Config{Dir: dir, MaxFileBytes: 1 << 30, MaxTotalBytes: 1 << 30})
	const n, msgs = 8, 50
	srv := netip.MustParseAddrPort("10.0.0.9:2855")
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), uint16(40000+i))
			if err := w.ConnOpen(t0, c, srv); err != nil {
				t.Error(err)
			}
			for j := range msgs {
				if err := w.Data(t0, c, srv, fmt.Appendf(nil, "%d-%d;", i, j)); err != nil {
					t.Error(err)
				}
				if err := w.Data(t0, srv, c, []byte("ok;")); err != nil {
					t.Error(err)
				}
				_ = w.Stats()
			}
			if err := w.ConnClose(t0, c, srv); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ok(t, w.Close())
	data := streams(t, readPcap(t, ourPcaps(t, dir, DefaultPrefix)[0]))
	for i := range n {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), uint16(40000+i))
		var want strings.Builder
		for j := range msgs {
			fmt.Fprintf(&want, "%d-%d;", i, j)
		}
		if got := string(data[c.String()+">"+srv.String()]); got != want.String() {
			t.Errorf("conn %d: %q", i, got)
		}
	}
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
		seq  uint64
	}{
		{"msrpscope-20240506T070809Z-000001.pcap", true, 1},
		{"msrpscope-20240506T070809Z-1234567.pcap", true, 1234567},
		{"msrpscope-20240506T070809Z-00001.pcap", false, 0},
		{"msrpscope-20240506T070809Z-000001.pcap.bak", false, 0},
		{"msrpscope-20240506T070809Z-000001.pcapng", false, 0},
		{"msrpscope-old-20240506T070809Z-000001.pcap", false, 0},
		{"msrpscopex-20240506T070809Z-000001.pcap", false, 0},
		{"other-20240506T070809Z-000001.pcap", false, 0},
		{"msrpscope-2024050GT070809Z-000001.pcap", false, 0},
		{"msrpscope-20240506X070809Z-000001.pcap", false, 0},
		{"msrpscope-20240506T070809Z-00000a.pcap", false, 0},
		{"msrpscope-20240506T070809Z_000001.pcap", false, 0},
		{"msrpscope.pcap", false, 0},
	} {
		_, seq, ok := parseName("msrpscope", tc.name)
		if ok != tc.ok || seq != tc.seq {
			t.Errorf("%s: ok=%v seq=%d, want %v %d", tc.name, ok, seq, tc.ok, tc.seq)
		}
	}
}

func writeFile(t testing.TB, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	ok(t, os.WriteFile(p, bytes.Repeat([]byte{'z'}, size), 0o644))
	return p
}

func TestRotationBySize(t *testing.T) {
	for _, tc := range []struct {
		maxFile int64
		seg     int
		v6      bool
	}{
		{4096, 1460, false},
		{4096, 1460, true},
		{1000, 500, false},
		{200, 1460, false}, // every packet exceeds the limit: one per file
	} {
		t.Run(fmt.Sprintf("max%d-seg%d-v6=%v", tc.maxFile, tc.seg, tc.v6), func(t *testing.T) {
			dir := t.TempDir()
			clk := &fakeClock{t: t0}
			w := mustOpen(t, Config{Dir: dir, MaxFileBytes: tc.maxFile, SegmentSize: tc.seg, Now: clk.Now})
			c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
			if tc.v6 {
				c, s = netip.MustParseAddrPort("[2001:db8::1]:5000"), netip.MustParseAddrPort("[2001:db8::2]:2855")
			}
			ok(t, w.ConnOpen(t0, c, s))
			var want []byte
			for i := range 20 {
				msg := randBytes(300+97*i, uint64(i))
				want = append(want, msg...)
				ok(t, w.Data(t0, c, s, msg))
				ok(t, w.Data(t0, s, c, []byte("ack")))
			}
			ok(t, w.ConnClose(t0, c, s))
			ok(t, w.Close())
			st := w.Stats()

			files := ourPcaps(t, dir, DefaultPrefix)
			if len(files) < 3 || int64(len(files)) != st.Files || st.Rotations != st.Files-1 {
				t.Fatalf("%d files, stats %+v", len(files), st)
			}
			var all []pkt
			var total int64
			for _, f := range files {
				fi, err := os.Stat(f)
				ok(t, err)
				total += fi.Size()
				pkts := readPcap(t, f)
				if len(pkts) == 0 {
					t.Fatalf("%s: empty", f)
				}
				if fi.Size() > tc.maxFile && len(pkts) > 1 {
					t.Fatalf("%s: %d bytes > %d with %d packets", f, fi.Size(), tc.maxFile, len(pkts))
				}
				all = append(all, pkts...)
			}
			if total != st.Bytes || int64(len(all)) != st.Packets {
				t.Errorf("on disk %d bytes %d packets, stats %+v", total, len(all), st)
			}
			if got := streams(t, all)[c.String()+">"+s.String()]; !bytes.Equal(got, want) {
				t.Errorf("stream across files differs (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

func TestMaxTotalBytes(t *testing.T) {
	dir := t.TempDir()
	// Left by a previous run, and foreign files that must never be touched.
	writeFile(t, dir, "msrpscope-20200101T000000Z-000001.pcap", 10000)
	writeFile(t, dir, "msrpscope-20200101T000000Z-000002.pcap", 10000)
	foreign := []string{
		"other-20200101T000000Z-000001.pcap",
		"msrpscope-old-20200101T000000Z-000001.pcap",
		"msrpscope-20200101T000000Z-000003.pcap.bak",
		"msrpscope-notes.txt",
		"msrpscopex-20190101T000000Z-000001.pcap",
	}
	for _, f := range foreign {
		writeFile(t, dir, f, 50000)
	}
	const maxFile, maxTotal = 4096, 16384
	clk := &fakeClock{t: t0}
	w := mustOpen(t, Config{Dir: dir, MaxFileBytes: maxFile, MaxTotalBytes: maxTotal, Now: clk.Now})
	ok(t, w.Check())

	// At the start: 20000 old bytes > 16384-4096, so the oldest goes.
	if _, err := os.Stat(filepath.Join(dir, "msrpscope-20200101T000000Z-000001.pcap")); !os.IsNotExist(err) {
		t.Fatalf("oldest file not deleted: %v", err)
	}
	if st := w.Stats(); st.FilesDeleted != 1 || st.Files != 0 {
		t.Fatalf("stats %+v", st)
	}

	ourTotal := func() int64 {
		var n int64
		for _, f := range ourPcaps(t, dir, DefaultPrefix) {
			fi, err := os.Stat(f)
			ok(t, err)
			n += fi.Size()
		}
		return n
	}
	c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
	for i := range 200 {
		if i%50 == 0 {
			clk.Advance(time.Second) // vary the timestamps in the names
		}
		ok(t, w.Data(t0, c, s, randBytes(400, uint64(i))))
		ok(t, w.Flush())
		if i == 0 && !strings.HasSuffix(w.Stats().CurrentFile, "msrpscope-20240506T070810Z-000003.pcap") {
			t.Fatalf("first file %s", w.Stats().CurrentFile)
		}
		if n := ourTotal(); n > maxTotal {
			t.Fatalf("after %d writes our files total %d > %d", i, n, maxTotal)
		}
	}
	ok(t, w.Close())
	st := w.Stats()
	files := ourPcaps(t, dir, DefaultPrefix)
	if st.FilesDeleted < 10 || int64(len(files)) != st.Files+2-st.FilesDeleted {
		t.Errorf("%d files left, stats %+v", len(files), st)
	}
	if !strings.HasSuffix(files[len(files)-1], fmt.Sprintf("-%06d.pcap", st.Files+2)) {
		t.Errorf("newest file %s", files[len(files)-1])
	}
	for _, f := range files {
		readPcap(t, f)
	}
	for _, f := range foreign {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) != 50000 {
			t.Errorf("foreign file %s touched: %v", f, err)
		}
	}
}

func TestRotationByAge(t *testing.T) {
	type step struct {
		advance   time.Duration
		wantFiles int64
	}
	for _, tc := range []struct {
		name  string
		age   time.Duration
		steps []step
	}{
		{"1m", time.Minute, []step{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}, {30 * time.Second, 2}, {31 * time.Second, 3}, {time.Hour, 4}}},
		{"default 1h", 0, []step{{0, 1}, {59 * time.Minute, 1}, {2 * time.Minute, 2}}},
		{"never", -1, []step{{0, 1}, {100 * time.Hour, 1}, {100 * time.Hour, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := &fakeClock{t: t0}
			w := mustOpen(t, Config{Dir: dir, MaxFileAge: tc.age, Now: clk.Now})
			c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
			for i, st := range tc.steps {
				clk.Advance(st.advance)
				ok(t, w.Data(time.Time{}, c, s, []byte("tick"))) // zero t: stamped by Now
				if got := w.Stats(); got.Files != st.wantFiles {
					t.Fatalf("step %d: %d files, want %d", i, got.Files, st.wantFiles)
				}
			}
			ok(t, w.Close())
			files := ourPcaps(t, dir, DefaultPrefix)
			var all []pkt
			for _, f := range files {
				all = append(all, readPcap(t, f)...)
			}
			if len(all) != len(tc.steps) {
				t.Fatalf("%d packets", len(all))
			}
			if !all[len(all)-1].ts.Equal(clk.Now()) {
				t.Errorf("last timestamp %v, want %v", all[len(all)-1].ts, clk.Now())
			}
			streams(t, all)
			want := fmt.Sprintf("msrpscope-%s-", clk.Now().UTC().Format(timeLayout))
			if tc.age >= 0 && !strings.Contains(files[len(files)-1], want) {
				t.Errorf("newest file %s, want name with %s", files[len(files)-1], want)
			}
		})
	}
}

func TestSnapLen(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, Config{Dir: dir, SnapLen: 100})
	ok(t, w.Data(t0, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), randBytes(1000, 3)))
	ok(t, w.Close())
	f, err := os.Open(ourPcaps(t, dir, DefaultPrefix)[0])
	ok(t, err)
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	ok(t, err)
	data, ci, err := r.ReadPacketData()
	ok(t, err)
	if r.Snaplen() != 100 || len(data) != 100 || ci.CaptureLength != 100 || ci.Length != 14+20+20+1000 {
		t.Fatalf("snaplen %d, captured %d of %d", r.Snaplen(), ci.CaptureLength, ci.Length)
	}
}
