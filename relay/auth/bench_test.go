package auth

import (
	"fmt"
	"testing"
)

// BenchmarkVerify measures a successful Verify (parse, nonce MAC, HA1,
// response, nonce-count table, Authentication-Info). Authorization values
// are prepared in batches outside the timer, each with a fresh nc.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []Algorithm{MD5, SHA256} {
		b.Run(string(alg), func(b *testing.B) {
			a, _ := newTestAuth(b, nil)
			base := answer(b, challengeFor(b, a, alg, false), "alice", "!secret", "00000001", "")
			const batch = 4096
			vals := make([][]byte, 0, batch)
			nc := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if len(vals) == 0 {
					b.StopTimer()
					if nc+batch >= 1<<32-1 { // new nonce before nc wraps
						base = answer(b, challengeFor(b, a, alg, false), "alice", "!secret", "00000001", "")
						nc = 0
					}
					for j := 0; j < batch; j++ {
						nc++
						c := base
						c.NC = fmt.Sprintf("%08x", nc)
						c.Response = clientResponse(string(alg), "alice", testRealm, "!secret", "AUTH", testURI, c.Nonce, c.NC, c.CNonce)
						vals = append(vals, []byte(c.String()))
					}
					b.StartTimer()
				}
				v := vals[0]
				vals = vals[1:]
				if _, err := a.Verify(v, "AUTH"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyBadResponse measures a rejected Verify (wrong password),
// the path a guesser drives.
func BenchmarkVerifyBadResponse(b *testing.B) {
	a, _ := newTestAuth(b, nil)
	c := answer(b, challengeFor(b, a, SHA256, false), "alice", "wrong", "00000001", "")
	v := []byte(c.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Verify(v, "AUTH"); err == nil {
			b.Fatal("verified")
		}
	}
}
