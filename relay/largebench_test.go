package relay

import (
	"bufio"
	"net"
	"strconv"
	"testing"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// largeMessage is a 10 MB message from A to B as SENDs of chunk bytes
// each (Failure-Report: no: no responses, the transfer is the body),
// frames back to back; frameEnds[i] is where frame i ends.
func (p *benchPair) largeMessage(size, chunk int) (msg []byte, frameEnds []int) {
	body := make([]byte, chunk)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for start, i := 0, 0; start < size; start, i = start+chunk, i+1 {
		end := min(start+chunk, size)
		tid := "lgtx" + strconv.Itoa(i)
		flag := "+"
		if end == size {
			flag = "$"
		}
		msg = append(msg, "MSRP "+tid+" SEND\r\nTo-Path: "+p.toPath+"\r\nFrom-Path: "+p.fromP+
			"\r\nMessage-ID: big1\r\nByte-Range: "+strconv.Itoa(start+1)+"-"+strconv.Itoa(end)+"/"+strconv.Itoa(size)+
			"\r\nFailure-Report: no\r\nContent-Type: application/octet-stream\r\n\r\n"...)
		msg = append(msg, body[:end-start]...)
		msg = append(msg, "\r\n-------"+tid+flag+"\r\n"...)
		frameEnds = append(frameEnds, len(msg))
	}
	return msg, frameEnds
}

// BenchmarkRelayLarge: a 10 MB message A → relay → B over loopback, in 64
// KiB chunks and in one chunk, A writing 64 KiB at a time; raw is one
// loopback TCP stream carrying the same bytes in the same writes (the
// reference of issue 16: the relay at >= 50 % of it).
func BenchmarkRelayLarge(b *testing.B) {
	const size = 10 << 20
	for _, bc := range []struct {
		name  string
		chunk int
	}{{"chunk64K", 64 << 10}, {"chunk10M", size}} {
		b.Run(bc.name, func(b *testing.B) {
			p := newBenchPair(b, false, nil)
			msg, ends := p.largeMessage(size, bc.chunk)
			br := msrp.NewReader(bufio.NewReaderSize(p.b, 256<<10), msrp.Limits{})
			one := func() {
				errc := make(chan error, 1)
				go func() { errc <- writeIn(p.a, msg, 64<<10) }()
				for range ends {
					f, err := br.ReadFrame()
					if err != nil {
						b.Fatal(err)
					}
					drain(b, f)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
			one()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				one()
			}
		})
	}
	b.Run("raw", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		acc := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); acc <- c }()
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		r := <-acc
		if r == nil {
			b.Fatal("accept failed")
		}
		defer r.Close()
		msg := make([]byte, size)
		rbuf := make([]byte, 256<<10)
		b.SetBytes(size)
		for b.Loop() {
			errc := make(chan error, 1)
			go func() { errc <- writeIn(w, msg, 64<<10) }()
			for n := 0; n < size; {
				k, err := r.Read(rbuf)
				if err != nil {
					b.Fatal(err)
				}
				n += k
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		}
	})
}

// writeIn writes msg to nc in writes of at most n bytes.
func writeIn(nc net.Conn, msg []byte, n int) error {
	for len(msg) > 0 {
		k := min(n, len(msg))
		if _, err := nc.Write(msg[:k]); err != nil {
			return err
		}
		msg = msg[k:]
	}
	return nil
}
