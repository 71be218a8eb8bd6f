package load

import (
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if d := float64(got-tc.want) / float64(tc.want); d < -0.07 || d > 0.07 {
			t.Errorf("quantile(%v) = %v, want %v within 7%%", tc.q, got, tc.want)
		}
	}
	for _, d := range []time.Duration{0, 1, 15, 16, 31, 32, 1 << 40, 1<<63 - 1} {
		b := bucketOf(d)
		if b < 0 || b >= len(h.counts) {
			t.Fatalf("bucketOf(%d) = %d out of range", d, b)
		}
		if d < 32 && bucketValue(b) != d {
			t.Errorf("bucketValue(bucketOf(%d)) = %d", d, bucketValue(b))
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	tests := []struct {
		uri, addr string
		wantErr   bool
	}{
		{"msrp://127.0.0.1:2855;tcp", "127.0.0.1:2855", false},
		{"msrp://127.0.0.1;tcp", "127.0.0.1:2855", false},
		{"msrps://127.0.0.1:2856;tcp", "", true}, // no TLS config
		{"http://x", "", true},
	}
	for _, tc := range tests {
		o, err := Options{RelayURI: tc.uri}.withDefaults()
		if (err != nil) != tc.wantErr || !tc.wantErr && (o.Addr != tc.addr || o.Duration != 10*time.Second) {
			t.Errorf("%s: %+v, %v", tc.uri, o, err)
		}
	}
}

// A direct run takes no relay option and needs no user.
func TestOptionsDirect(t *testing.T) {
	o, err := Options{Direct: true}.withDefaults()
	if err != nil || len(o.Relays) != 0 || o.Addr != "" || o.Pairs != 1 || o.Duration != 10*time.Second {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, bad := range []Options{
		{Direct: true, RelayURI: "msrp://127.0.0.1:2855;tcp"},
		{Direct: true, Relays: []string{"msrp://127.0.0.1:2855;tcp"}},
		{Direct: true, Addr: "127.0.0.1:2855"},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
