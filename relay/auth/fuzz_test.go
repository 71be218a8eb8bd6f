package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// FuzzVerify: arbitrary Authorization bytes never panic, fail only with
// the package's errors, and verify only when they carry the correct
// response for a known user (recomputed here independently).
func FuzzVerify(f *testing.F) {
	users := testUsers(f)
	passwords := map[string]string{"alice": "!secret", "carol": `p"w\d:`, "bob": "hunter2", "dave": "pw"}
	clk := newClock()
	uris := testURIs(f)
	mk := func() *Authenticator {
		a, err := New(Config{Realm: testRealm, URIs: uris, Secret: []byte(testSecret), Users: users, Now: clk.Now, MaxTracked: 4})
		if err != nil {
			f.Fatal(err)
		}
		return a
	}
	seedAuth := mk()
	for _, alg := range []Algorithm{MD5, SHA256} {
		c := answer(f, challengeFor(f, seedAuth, alg, false), "alice", "!secret", "00000001", "")
		f.Add([]byte(c.String()))
		c.Algorithm = "-"
		f.Add([]byte(c.String()))
		b := answer(f, challengeFor(f, seedAuth, alg, false), "bob", "hunter2", "0000000A", "")
		f.Add([]byte(b.String()))
	}
	// The MD5-only user answers SHA-256, then the MD5 offer that follows.
	d := answer(f, challengeFor(f, seedAuth, SHA256, false), "dave", "pw", "00000001", "")
	f.Add([]byte(d.String()))
	_, err := seedAuth.Verify([]byte(d.String()), "AUTH")
	d = answer(f, seedAuth.ChallengesAfter(err)[0], "dave", "pw", "00000001", "")
	f.Add([]byte(d.String()))
	f.Add([]byte(`Digest username="Alice", realm="intra.example.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1"`))
	f.Add([]byte(`Digest username="a\"b", realm="` + testRealm + `", nonce="", uri="", response=""`))
	f.Add([]byte("Digest"))
	f.Add([]byte(""))

	f.Fuzz(func(t *testing.T, v []byte) {
		a := mk() // fresh nonce-count table: the outcome depends on v only
		res, err := a.Verify(v, "AUTH")
		if err != nil {
			known := false
			for _, e := range allErrs {
				if errors.Is(err, e) {
					known = true
				}
			}
			if !known {
				t.Fatalf("unexpected error %v", err)
			}
			if res.User != "" || res.AuthInfo != nil {
				t.Fatalf("result with error: %+v", res)
			}
			// Only dave lacks an HA1 (SHA-256): only dave is offered another.
			var ae *AlgorithmError
			if errors.Is(err, ErrUserAlgorithm) != errors.As(err, &ae) ||
				ae != nil && (ae.User != "dave" || ae.Used != SHA256 || len(ae.Offer) != 1 || ae.Offer[0] != MD5) {
				t.Fatalf("error %v (%#v)", err, ae)
			}
			return
		}
		d, perr := msrp.ParseDigest(v)
		if perr != nil {
			t.Fatalf("verified but does not parse: %v", perr)
		}
		get := func(n string) string { s, _ := d.Get(n); return s }
		pass, ok := passwords[get("username")]
		if !ok || get("username") != res.User {
			t.Fatalf("verified unknown user %q", get("username"))
		}
		alg := get("algorithm")
		if alg == "" {
			alg = "MD5"
		}
		ha1 := h(alg, res.User+":"+testRealm+":"+pass)
		ha2 := h(alg, "AUTH:"+get("uri"))
		want := h(alg, ha1+":"+get("nonce")+":"+get("nc")+":"+get("cnonce")+":"+get("qop")+":"+ha2)
		if strings.ToLower(get("response")) != want {
			t.Fatalf("verified a wrong response %q, want %q", get("response"), want)
		}
		if _, err := msrp.ParseAuthenticationInfo(res.AuthInfo); err != nil {
			t.Fatalf("AuthInfo %q: %v", res.AuthInfo, err)
		}
		// And the same value never verifies twice.
		if _, err := a.Verify(v, "AUTH"); !errors.Is(err, ErrReplay) {
			t.Fatalf("second Verify: %v", err)
		}
	})
}
