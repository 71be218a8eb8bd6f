package pcap

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkData measures Data on an open connection, file writes included
// (buffered, rotating at the default 64 MiB). Reported per Data call;
// packets/op says how many segments each call writes.
func BenchmarkData(b *testing.B) {
	for _, bc := range []struct {
		size int
		v6   bool
	}{{200, false}, {200, true}, {64 << 10, false}, {64 << 10, true}} {
		b.Run(fmt.Sprintf("payload=%d/v6=%v", bc.size, bc.v6), func(b *testing.B) {
			w, err := Open(Config{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			c, s := netip.MustParseAddrPort("10.0.0.1:5000"), netip.MustParseAddrPort("10.0.0.2:2855")
			if bc.v6 {
				c, s = netip.MustParseAddrPort("[2001:db8::1]:5000"), netip.MustParseAddrPort("[2001:db8::2]:2855")
			}
			payload := randBytes(bc.size, 7)
			if err := w.ConnOpen(t0, c, s); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			before := w.Stats().Packets
			for b.Loop() {
				if err := w.Data(t0, c, s, payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(w.Stats().Packets-before)/float64(b.N), "packets/op")
		})
	}
}
