package hep

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// checkPlan verifies what the kernel requires of the runs planned for lens,
// and that every packet is sent exactly once.
func checkPlan(t *testing.T, lens []int, maxSeg int, p *gsoPlanner, runs []gsoRun) {
	t.Helper()
	seen := make([]int, len(lens))
	next := 0
	for _, r := range runs {
		if r.start != next || r.end <= r.start {
			t.Fatalf("runs %+v do not tile the batch", runs)
		}
		next = r.end
		for _, i := range p.order[r.start:r.end] {
			seen[i]++
		}
		n := r.end - r.start
		if r.seg == 0 {
			if n != 1 {
				t.Fatalf("run %+v: %d packets without a segment size", r, n)
			}
			continue
		}
		if n < 2 || n > gsoMaxSegments {
			t.Fatalf("run %+v: %d segments", r, n)
		}
		if r.seg > maxSeg {
			t.Fatalf("run %+v: segment %d > max %d", r, r.seg, maxSeg)
		}
		total := 0
		for k := r.start; k < r.end; k++ {
			l := lens[p.order[k]]
			if k == r.end-1 {
				if l > r.seg {
					t.Fatalf("run %+v: last packet %d bytes > segment", r, l)
				}
				total += l
				continue
			}
			if d := r.seg - l; d < 0 || d > 0 && d < chunkHeaderLen {
				t.Fatalf("run %+v: packet of %d bytes cannot be padded to %d", r, l, r.seg)
			}
			total += r.seg
		}
		if total > 65507 { // 65535 less the IPv4 and UDP headers: what the kernel accepts
			t.Fatalf("run %+v: %d bytes", r, total)
		}
	}
	if next != len(lens) {
		t.Fatalf("runs %+v cover %d of %d packets", runs, next, len(lens))
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("packet %d planned %d times", i, n)
		}
	}
}

func TestGSOPlan(t *testing.T) {
	rep := func(l, n int) []int { return slices.Repeat([]int{l}, n) }
	type run struct{ n, seg int }
	for _, tc := range []struct {
		name   string
		lens   []int
		maxSeg int
		want   []run
	}{
		{"one packet", []int{300}, 1472, []run{{1, 0}}},
		{"equal sizes", rep(300, 10), 1472, []run{{10, 300}}},
		{"last is shorter, unpadded", []int{300, 299}, 1472, []run{{2, 300}}},
		{"1-5 bytes short needs a larger segment", []int{300, 299, 250}, 1472, []run{{3, 306}}},
		{"...or ends the run where it cannot grow", []int{1472, 1470, 1400}, 1472, []run{{2, 1472}, {1, 0}}},
		{"sizes far apart", []int{1000, 300}, 1472, []run{{1, 0}, {1, 0}}},
		{"two size classes", []int{450, 250, 440, 260, 450, 250}, 1472, []run{{3, 450}, {3, 260}}},
		{"within 64 bytes or an eighth", []int{200, 136, 135}, 65507, []run{{2, 200}, {1, 0}}},
		{"64 segments at most", rep(100, 130), 1472, []run{{64, 100}, {64, 100}, {2, 100}}},
		{"one IP packet's bytes at most", rep(1400, 50), 1472, []run{{46, 1400}, {4, 1400}}},
		{"byte limit counts the grown segment", []int{21835, 21834, 21834}, 65507, []run{{2, 21835}, {1, 0}}},
		{"grows to exactly maxSeg", []int{1466, 1465, 1400}, 1472, []run{{3, 1472}}},
		{"cannot grow past maxSeg by one", []int{1467, 1466, 1400}, 1472, []run{{2, 1467}, {1, 0}}},
		{"larger than a segment may be", []int{2000, 2000, 300}, 1472, []run{{1, 0}, {1, 0}, {1, 0}}},
		{"empty", nil, 1472, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p gsoPlanner
			runs := p.plan(tc.lens, tc.maxSeg)
			checkPlan(t, tc.lens, tc.maxSeg, &p, runs)
			var got []run
			for _, r := range runs {
				got = append(got, run{r.end - r.start, r.seg})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("runs %v, want %v", got, tc.want)
			}
		})
	}
}

// Random batches: the plan is always one the kernel accepts.
func TestGSOPlanRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var p gsoPlanner
	for range 2000 {
		maxSeg := []int{1452, 1472, 9000, 65507}[r.IntN(4)]
		lens := make([]int, r.IntN(udpBatch)+1)
		for i := range lens {
			switch r.IntN(3) {
			case 0:
				lens[i] = 60 + r.IntN(40)
			case 1:
				lens[i] = 200 + r.IntN(300)
			default:
				lens[i] = 60 + r.IntN(maxSeg+100)
			}
		}
		checkPlan(t, lens, maxSeg, &p, p.plan(lens, maxSeg))
	}
}

func FuzzGSOPlan(f *testing.F) {
	f.Add([]byte{1, 44, 1, 43, 0, 250}, uint16(1472))
	f.Add(bytes.Repeat([]byte{5, 120}, 100), uint16(9000))
	f.Fuzz(func(t *testing.T, sizes []byte, maxSeg uint16) {
		if maxSeg < chunkHeaderLen+headerLen {
			return
		}
		var lens []int
		for i := 0; i+1 < len(sizes) && len(lens) < udpBatch; i += 2 {
			lens = append(lens, max(headerLen, int(sizes[i])<<8|int(sizes[i+1])))
		}
		var p gsoPlanner
		checkPlan(t, lens, int(maxSeg), &p, p.plan(lens, int(maxSeg)))
	})
}

// A padded packet decodes to the packet it was.
func TestAppendPadded(t *testing.T) {
	pkt := testPacket(t, "pad", 100)
	want, err := Decode(pkt)
	if err != nil {
		t.Fatal(err)
	}
	for _, pad := range []int{0, 6, 7, 100} {
		b := appendPadded([]byte("x"), pkt, len(pkt)+pad)
		if b[0] != 'x' || len(b) != 1+len(pkt)+pad {
			t.Fatalf("pad %d: %d bytes", pad, len(b))
		}
		got, err := Decode(b[1:])
		if err != nil {
			t.Fatalf("pad %d: %v", pad, err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Fatalf("pad %d: decoded\n%+v\nwant\n%+v", pad, got, want)
		}
		if !bytes.Equal(pkt[6:], b[7:7+len(pkt)-6]) {
			t.Fatalf("pad %d: chunks changed", pad)
		}
	}
}

// Packets of many sizes sent in one batch reach a collector on loopback
// intact, through GSO runs where the kernel offers them.
func TestClientUDPSegmentation(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: 50 * time.Millisecond})
	r := rand.New(rand.NewPCG(3, 4))
	want := map[string]int{}
	// Four batches of 50 (the writer lingers while they are queued), each waited for: a burst
	// stays well inside the collector's default socket buffer.
	const batches, per = 4, 50
	for b := range batches {
		for i := range per {
			cid := fmt.Sprintf("cid-%d-%d", b, i)
			size := 150 + r.IntN(60) // similar sizes: runs with padding
			if i%10 == 0 {
				size = 1000 + r.IntN(3000)
			}
			if !c.Send(testPacket(t, cid, size)) {
				t.Fatalf("packet %s refused", cid)
			}
			want[cid] = size
		}
		waitFor(t, "a batch", func() bool { return len(col.packets()) >= (b+1)*per })
	}
	for _, p := range col.packets() {
		cid := string(p.CorrelationID)
		size, ok := want[cid]
		if !ok || len(p.Payload) != size || len(p.Extra) != 0 {
			t.Fatalf("packet %s: payload %d bytes (want %d), extra %v", cid, len(p.Payload), size, p.Extra)
		}
		delete(want, cid)
	}
	col.mu.Lock()
	bad := col.bad
	col.mu.Unlock()
	if len(want) != 0 || bad != 0 {
		t.Fatalf("missing %d packets, %d undecodable", len(want), bad)
	}
	waitFor(t, "the sent counter", func() bool { return c.Stats().Sent == batches*per }) // counted after the write
	st := c.Stats()
	if st.Sent != batches*per || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if runtime.GOOS == "linux" && st.Segmented == 0 {
		t.Fatalf("no packet left in a GSO run: %+v", st)
	}
}

func TestClientUDPNoGSO(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Linger: 50 * time.Millisecond, NoGSO: true})
	for i := range 50 {
		c.Send(testPacket(t, fmt.Sprintf("cid-%d", i), 100))
	}
	waitFor(t, "all packets", func() bool { return len(col.packets()) >= 50 && c.Stats().Sent == 50 })
	if st := c.Stats(); st.Segmented != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// refusingBatch fails every message that carries a control message (a GSO
// run) with errno, and a message longer than tooLong (when set) with
// EMSGSIZE; it records the datagrams it accepts. Like sendmmsg, it reports
// an error only for the first message of a call.
type refusingBatch struct {
	errno   syscall.Errno
	tooLong int
	sent    [][]byte
	errs    int
}

func (w *refusingBatch) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for i, m := range ms {
		var errno syscall.Errno
		switch {
		case len(m.OOB) > 0:
			errno = w.errno
		case w.tooLong > 0 && len(m.Buffers[0]) > w.tooLong:
			errno = syscall.EMSGSIZE
		}
		if errno != 0 {
			if i == 0 {
				w.errs++
				return -1, &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmmsg", errno)}
			}
			return i, nil
		}
		w.sent = append(w.sent, bytes.Clone(m.Buffers[0]))
	}
	return len(ms), nil
}

func sentIDs(t *testing.T, sent [][]byte) []string {
	t.Helper()
	var got []string
	for _, b := range sent {
		// A GSO run is its packets back to back, each padded to the segment size but the last.
		for len(b) > 0 {
			n, err := PacketLen(b)
			if err != nil || n > len(b) {
				t.Fatalf("bad datagram: %v", err)
			}
			p, err := Decode(b[:n])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(p.CorrelationID))
			b = b[n:]
		}
	}
	slices.Sort(got)
	return got
}

// When the path refuses segmentation (EIO: no checksum offload; EMSGSIZE
// while the route's MTU did not shrink), the writer sends what is left one
// datagram at a time, and keeps doing so.
func TestClientGSORefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("UDP_SEGMENT is Linux-only")
	}
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.EMSGSIZE} {
		t.Run(errno.Error(), func(t *testing.T) {
			conn, err := net.Dial("udp", "127.0.0.1:9") // loopback's MTU is far above 1472
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := &Client{cfg: ClientConfig{WriteTimeout: time.Second}, log: testLogger()}
			var ub udpBatcher
			w := &refusingBatch{errno: errno}
			ub.conn, ub.wb, ub.gso, ub.maxSeg = conn, w, true, 1472
			var bufs []*[]byte
			for i, size := range []int{1000, 300, 300, 300, 2000, 290} {
				b := testPacket(t, fmt.Sprintf("c%d", i), size)
				bufs = append(bufs, &b)
			}
			sent, err := c.writeUDP(conn, &ub, bufs)
			if err != nil || sent != len(bufs) {
				t.Fatalf("sent %d of %d: %v", sent, len(bufs), err)
			}
			if ub.gso || w.errs != 1 {
				t.Fatalf("gso still on %v, %d refusals", ub.gso, w.errs)
			}
			if got := sentIDs(t, w.sent); !slices.Equal(got, []string{"c0", "c1", "c2", "c3", "c4", "c5"}) {
				t.Fatalf("sent %v", got)
			}
			if c.Stats().Segmented != 0 {
				t.Fatalf("segmented counted: %+v", c.Stats())
			}
			// From now on, plain datagrams.
			w.sent = nil
			if sent, err := c.writeUDP(conn, &ub, bufs[1:4]); err != nil || sent != 3 || len(w.sent) != 3 || w.errs != 1 {
				t.Fatalf("after refusal: sent %d, %v, %d datagrams, %d refusals", sent, err, len(w.sent), w.errs)
			}
		})
	}
}

// A datagram the kernel refuses is lost alone: the rest of its batch still
// goes, with GSO or without.
func TestClientUDPRefusedDatagramLosesOnlyItself(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			conn, err := net.Dial("udp", "127.0.0.1:9")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := &Client{cfg: ClientConfig{WriteTimeout: time.Second, NoGSO: !gso}, log: testLogger()}
			w := &refusingBatch{tooLong: 1500}
			ub := udpBatcher{conn: conn, wb: w, gso: gso, maxSeg: 1472}
			var bufs []*[]byte
			for i, size := range []int{300, 3000, 300, 300, 200, 3000, 1000} {
				b := testPacket(t, fmt.Sprintf("c%d", i), size)
				bufs = append(bufs, &b)
			}
			sent, err := c.writeUDP(conn, &ub, bufs)
			if sent != 5 || !errors.Is(err, syscall.EMSGSIZE) {
				t.Fatalf("sent %d, err %v: want 5 and EMSGSIZE", sent, err)
			}
			if got := sentIDs(t, w.sent); !slices.Equal(got, []string{"c0", "c2", "c3", "c4", "c6"}) {
				t.Fatalf("sent %v", got)
			}
			if ub.gso != gso {
				t.Fatalf("gso %v after a plain datagram's error", ub.gso)
			}
		})
	}
}

// Over UDP a packet above 65507 bytes could never leave: Send refuses it
// (whatever MaxPacketSize says) instead of letting it fail a batch.
func TestClientUDPPacketLimit(t *testing.T) {
	col := newCollector(t, "udp", "", nil)
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: col.addr, Profile: Profile{MaxPacketSize: 65535}})
	if c.Send(testPacket(t, "big", 65520-100)) {
		t.Fatal("a 65520-byte UDP packet was queued")
	}
	if !c.Send(testPacket(t, "small", 100)) {
		t.Fatal("small packet refused")
	}
	waitFor(t, "the small packet", func() bool { return col.has("small") })
	if st := c.Stats(); st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIsGSOError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("UDP_SEGMENT is Linux-only")
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "write", Err: syscall.EIO}, true},
		{&net.OpError{Op: "write", Err: syscall.EINVAL}, true},
		{&net.OpError{Op: "write", Err: os.NewSyscallError("sendmmsg", syscall.EMSGSIZE)}, true},
		{&net.OpError{Op: "write", Err: syscall.ECONNREFUSED}, false},
		{errors.New("other"), false},
	} {
		if got := isGSOError(tc.err); got != tc.want {
			t.Errorf("isGSOError(%v) = %v", tc.err, got)
		}
	}
}

// The same over IPv6 (the route's MTU comes from IPV6_MTU).
func TestClientUDPSegmentationIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer pc.Close()
	c := newTestClient(t, ClientConfig{Transport: UDP, Addr: pc.LocalAddr().String(), Linger: 50 * time.Millisecond})
	const n = 40
	for i := range n {
		if !c.Send(testPacket(t, fmt.Sprintf("v6-%d", i), 200+i)) {
			t.Fatalf("packet %d refused", i)
		}
	}
	buf := make([]byte, 70000)
	seen := map[string]bool{}
	for len(seen) < n {
		if err := pc.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(seen), err)
		}
		p, err := Decode(buf[:m])
		if err != nil {
			t.Fatal(err)
		}
		seen[string(p.CorrelationID)] = true
	}
	waitFor(t, "the sent counter", func() bool { return c.Stats().Sent == n })
	if st := c.Stats(); runtime.GOOS == "linux" && st.Segmented == 0 {
		t.Fatalf("stats %+v", st)
	}
}
