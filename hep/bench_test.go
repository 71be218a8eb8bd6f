package hep

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

func benchPacket() Packet {
	return Packet{
		IPProto: IPProtoTCP, Src: goldenSrc, Dst: goldenDst, Time: goldenTime, ProtoType: ProtoLog, CaptureID: 2001,
		NodeName: []byte("relay-1"), CorrelationID: []byte("b3f1c2d4e5f60718293a4b5c6d7e8f90abcdef012345"),
		Payload: msrpFrame("a1b2c3d4", bytes.Repeat([]byte("x"), 200), '$'),
	}
}

func BenchmarkEncode(b *testing.B) {
	p := benchPacket()
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(p.EncodedLen()))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = p.AppendEncode(buf[:0])
	}
}

func BenchmarkDecode(b *testing.B) {
	p := benchPacket()
	enc, _ := p.AppendEncode(nil)
	var d Packet
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	ev := Event{ProtocolMSRPS, EventTLSHandshake, StatusSuccess, "TLS handshake done", []Attr{{AttrClientSubject, "CN=alice,O=Example"}}}
	buf := make([]byte, 0, 1024)
	for _, form := range []EventForm{FormColon, FormJSON} {
		b.Run(form.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendEvent(buf[:0], form, ev)
			}
		})
	}
}

func BenchmarkAppendEventPacket(b *testing.B) {
	pr := Profile{CaptureID: 2001, NodeName: []byte("relay-1")}
	m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: []byte("conn-42")}
	ev := Event{ProtocolMSRP, EventAccepted, StatusSuccess, "Connection accepted", nil}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = pr.AppendEventPacket(buf[:0], m, ev)
	}
}

func BenchmarkAppendFramePacket(b *testing.B) {
	pr := Profile{CaptureID: 2001}
	m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: []byte("sess-42")}
	for _, size := range []int{200, 64 * 1024} {
		frame := msrpFrame("a1b2c3d4", bytes.Repeat([]byte("x"), size), '$')
		buf := make([]byte, 0, 70000)
		b.Run(map[int]string{200: "body200B", 64 * 1024: "body64KiB-truncated"}[size], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = pr.AppendFramePacket(buf[:0], m, frame)
			}
		})
	}
}

// BenchmarkUDPSend measures how many packets per second a Client delivers to a loopback UDP reader
// (the caller spins while the queue is full, so the writer is the bottleneck).
func BenchmarkUDPSend(b *testing.B) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	pc.SetReadBuffer(8 << 20)
	received := make(chan int, 1)
	go func() {
		buf := make([]byte, 70000)
		n := 0
		for {
			pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, _, err := pc.ReadFromUDPAddrPort(buf); err != nil { // no per-packet net.Addr allocation
				received <- n
				return
			}
			n++
		}
	}()
	c, err := NewClient(context.Background(), ClientConfig{Transport: UDP, Addr: pc.LocalAddr().String(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	p := benchPacket()
	p.Src = netip.MustParseAddrPort("10.0.0.1:1")
	pkt, _ := p.AppendEncode(nil)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		for !c.Send(pkt) {
			runtime.Gosched()
		}
	}
	for s := c.Stats(); s.Sent+s.Dropped < uint64(b.N); s = c.Stats() {
		runtime.Gosched() // until the writer has handled every packet
	}
	elapsed := time.Since(start)
	b.StopTimer()
	c.Close()
	s := c.Stats()
	b.ReportMetric(float64(s.Sent)/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(float64(<-received)/float64(max(s.Sent, 1))*100, "%received")
}

// BenchmarkClientSend is the caller's cost of SendEvent (encode into a pooled buffer and queue) with
// the writer draining to a loopback UDP reader.
func BenchmarkClientSendEvent(b *testing.B) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 70000)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	c, err := NewClient(context.Background(), ClientConfig{Transport: UDP, Addr: pc.LocalAddr().String(), Logger: testLogger(), QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: []byte("conn-42")}
	ev := Event{ProtocolMSRP, EventAccepted, StatusSuccess, "Connection accepted", nil}
	b.ReportAllocs()
	for b.Loop() {
		c.SendEvent(m, ev) // a full queue drops: that is the caller-side cost too
	}
}

// BenchmarkUDPWriteBatch is the writer's cost per packet for one batch of 64 packets to a loopback
// port that holds its socket without reading (the kernel's full send and receive path, then a
// drop): plain sendmmsg against GSO runs, for packets of one size and of mixed sizes.
func BenchmarkUDPWriteBatch(b *testing.B) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer hole.Close()
	for _, sizes := range []struct {
		name string
		size func(i int) int
	}{
		{"equal", func(int) int { return 300 }},
		{"mixed", func(i int) int { return []int{300, 420, 180, 310, 440, 190}[i%6] }},
	} {
		var bufs []*[]byte
		for i := range udpBatch {
			pkt := testPacket(b, "bench-correlation-id", sizes.size(i))
			bufs = append(bufs, &pkt)
		}
		for _, gso := range []bool{false, true} {
			name := sizes.name + "/plain"
			if gso {
				name = sizes.name + "/gso"
			}
			b.Run(name, func(b *testing.B) {
				conn, err := net.Dial("udp", hole.LocalAddr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				c := &Client{cfg: ClientConfig{WriteTimeout: time.Second, NoGSO: !gso}, log: testLogger()}
				var ub udpBatcher
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.writeUDP(conn, &ub, bufs); err != nil {
						b.Fatal(err)
					}
				}
				if gso && !ub.gso && runtime.GOOS == "linux" {
					b.Fatal("GSO not used")
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bufs)), "ns/packet")
			})
		}
	}
}

// BenchmarkUDPSendFrameParallel: many goroutines (the relay's read loops)
// trace 1,000-byte frames into one UDP client at once: before, one batch
// being filled whose lock producers wait for; after, udpShards batches
// taken with TryLock, never waited for.
// Each does some work between frames (relayWork), as a relay's read loop
// does. mutex-wait-ns/op is the time goroutines spent blocked on locks
// (runtime/metrics), per frame: a relay goroutine blocked there is parked
// with whatever buffers it holds. After, what is left is the client's
// writer goroutine waiting for a batch or the socket (producers never
// wait); producers no longer slowed by a lock offer more packets than a
// saturated writer sends, and the queue drops and counts them (%dropped).
func BenchmarkUDPSendFrameParallel(b *testing.B) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 70000)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	frame := bytes.Repeat([]byte("x"), 1000)
	for _, v := range []struct {
		name   string
		shards int
		wait   bool
	}{{"before/1-batch-waits", 1, true}, {"after/8-batches-never-wait", udpShards, false}} {
		b.Run(v.name, func(b *testing.B) {
			c, err := NewClient(context.Background(), ClientConfig{Transport: UDP, Addr: pc.LocalAddr().String(),
				Logger: testLogger(), QueueSize: 1 << 14, shards: v.shards, udpWait: v.wait})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			m := Meta{Src: goldenSrc, Dst: goldenDst, Time: goldenTime, CorrelationID: []byte("sessA~sessB")}
			sample := []metrics.Sample{{Name: "/sync/mutex/wait/total:seconds"}}
			metrics.Read(sample)
			wait0 := sample[0].Value.Float64()
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				x := 0
				for pb.Next() {
					for i := range relayWork { // the relay's own work per frame, about 1-2 µs
						x = x*31 + i
					}
					c.SendFrameFunc(m, func(dst []byte, room int) []byte { return append(dst, frame...) })
				}
				sinkInt.Add(int64(x))
			})
			metrics.Read(sample)
			b.ReportMetric((sample[0].Value.Float64()-wait0)*1e9/float64(b.N), "mutex-wait-ns/op")
			st := c.Stats()
			b.ReportMetric(float64(st.Dropped)/float64(b.N)*100, "%dropped")
			b.ReportMetric(float64(st.Busy)/float64(b.N)*100, "%busy")
		})
	}
}

// relayWork is the loop BenchmarkUDPSendFrameParallel runs per frame
// besides tracing it; sinkInt keeps its result.
const relayWork = 3000

var sinkInt atomic.Int64
