package auth

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

var allErrs = []error{ErrMalformed, ErrRealm, ErrURI, ErrAlgorithm, ErrQop, ErrNonce, ErrStale, ErrReplay, ErrUnknownUser, ErrBadResponse, ErrUserAlgorithm}

func checkErr(t *testing.T, got, want error) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("err = %v, want nil", got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("err = %v, want %v", got, want)
	}
	for _, e := range allErrs {
		if e != want && errors.Is(got, e) {
			t.Fatalf("err = %v is also %v", got, e)
		}
	}
}

// RFC 7616 §3.9.1: the same request answered with MD5 and SHA-256.
func TestKnownAnswerRFC7616(t *testing.T) {
	const (
		user, realm, pass = "Mufasa", "http-auth@example.org", "Circle of Life"
		nonce             = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		cnonce            = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
	)
	for _, tc := range []struct {
		alg  Algorithm
		want string
	}{
		{MD5, "8ca523f5e9506fed4657c9700eebdbec"},
		{SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			ha1 := computeHA1(tc.alg, user, realm, pass)
			got := string(computeResponse(tc.alg, ha1, nonce, "00000001", cnonce, "auth", "GET", "/dir/index.html"))
			if got != tc.want {
				t.Errorf("package: %s, want %s", got, tc.want)
			}
			if ind := clientResponse(string(tc.alg), user, realm, pass, "GET", "/dir/index.html", nonce, "00000001", cnonce); ind != tc.want {
				t.Errorf("independent: %s, want %s", ind, tc.want)
			}
		})
	}
}

// RFC 4976 §5.1 does not state Alice's password, and its Authorization has
// no uri. Its response is in fact RFC 2617 §3.5's example response
// (Mufasa, "Circle Of Life", realm testrealm@host.com, GET /dir/index.html)
// copied with the same nonce, nc and cnonce: it cannot be verified for Alice.
func TestRFC4976Example(t *testing.T) {
	frame, err := os.ReadFile("../msrp/testdata/rfc/rfc4976-s5.1-auth2.msrp")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Authorization: (.*)\r$`).FindSubmatch(frame)
	if m == nil {
		t.Fatal("no Authorization in the example")
	}
	d, err := msrp.ParseDigest(m[1])
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := d.Get("nonce")
	nc, _ := d.Get("nc")
	cnonce, _ := d.Get("cnonce")
	resp, _ := d.Get("response")
	if _, ok := d.Get("uri"); ok {
		t.Error("the example has a uri after all")
	}
	rfc2617 := clientResponse("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html", nonce, nc, cnonce)
	if resp != rfc2617 || resp != "6629fae49393a05397450978507c4ef1" {
		t.Errorf("response %s, RFC 2617 example computes %s", resp, rfc2617)
	}

	a, _ := newTestAuth(t, func(c *Config) {
		c.Realm = "intra.example.com"
		c.URIs = testURIs(t, "msrps://intra.example.com;tcp")
	})
	_, err = a.Verify(m[1], "AUTH")
	checkErr(t, err, ErrMalformed) // no uri
	_, err = a.VerifyWithURI(m[1], "AUTH", "msrps://alice@intra.example.com;tcp")
	checkErr(t, err, ErrNonce) // not our nonce
}

func TestFlow(t *testing.T) {
	for _, tc := range []struct {
		name, user, pass string
		alg              Algorithm
	}{
		{"sha256-password", "alice", "!secret", SHA256},
		{"md5-password", "alice", "!secret", MD5},
		{"escaped-password", "carol", `p"w\d:`, SHA256},
		{"sha256-ha1", "bob", "hunter2", SHA256},
		{"md5-ha1", "bob", "hunter2", MD5},
		{"md5-ha1-only", "dave", "pw", MD5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAuth(t, nil)
			c := answer(t, challengeFor(t, a, tc.alg, false), tc.user, tc.pass, "00000001", "")
			res, err := a.Verify([]byte(c.String()), "AUTH")
			checkErr(t, err, nil)
			if res.User != tc.user || res.URI != testURI || res.Algorithm != tc.alg {
				t.Errorf("result %+v", res)
			}
			rsp := h(string(tc.alg), h(string(tc.alg), tc.user+":"+testRealm+":"+tc.pass)+":"+c.Nonce+":00000001:0a4f113b:auth:"+h(string(tc.alg), ":"+testURI))
			want := `qop=auth, rspauth="` + rsp + `", cnonce="0a4f113b", nc=00000001`
			if string(res.AuthInfo) != want {
				t.Errorf("AuthInfo\n got %s\nwant %s", res.AuthInfo, want)
			}
			d, err := msrp.ParseAuthenticationInfo(res.AuthInfo)
			if err != nil {
				t.Fatalf("AuthInfo does not parse: %v", err)
			}
			if v, _ := d.Get("rspauth"); v != rsp {
				t.Errorf("parsed rspauth %q", v)
			}
			// The next nc on the same nonce works too.
			c2 := answer(t, challengeFor(t, a, tc.alg, false), tc.user, tc.pass, "00000001", "")
			c2.Nonce, c2.NC = c.Nonce, "00000002"
			c2.Response = clientResponse(string(tc.alg), tc.user, testRealm, tc.pass, "AUTH", testURI, c2.Nonce, c2.NC, c2.CNonce)
			_, err = a.Verify([]byte(c2.String()), "AUTH")
			checkErr(t, err, nil)
		})
	}
}

func TestChallenges(t *testing.T) {
	a, _ := newTestAuth(t, nil)
	chs := a.Challenges(false)
	if len(chs) != 2 {
		t.Fatalf("%d challenges", len(chs))
	}
	re := regexp.MustCompile(`^Digest realm="relay\.example\.com", nonce="([A-Za-z0-9_-]{43})", opaque="([A-Za-z0-9_-]+)", algorithm=(SHA-256|MD5), qop="auth"$`)
	var nonces []string
	for i, want := range []string{"SHA-256", "MD5"} {
		m := re.FindStringSubmatch(string(chs[i]))
		if m == nil || m[3] != want {
			t.Fatalf("challenge %d: %s", i, chs[i])
		}
		nonces = append(nonces, m[1])
		if _, err := msrp.ParseDigest(chs[i]); err != nil {
			t.Error(err)
		}
	}
	if nonces[0] != nonces[1] {
		t.Error("challenges of one 401 have different nonces")
	}
	if again := re.FindStringSubmatch(string(a.Challenges(false)[0])); again[1] == nonces[0] {
		t.Error("nonce reused across 401s")
	}
	for _, ch := range a.Challenges(true) {
		if !strings.HasSuffix(string(ch), `, qop="auth", stale=true`) {
			t.Errorf("stale challenge %s", ch)
		}
	}
	b, _ := newTestAuth(t, func(c *Config) { c.Algorithms = []Algorithm{"md5"} })
	if chs := b.Challenges(false); len(chs) != 1 || !strings.Contains(string(chs[0]), "algorithm=MD5,") {
		t.Errorf("MD5-only: %q", chs)
	}
}

func TestVerifyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		alg  Algorithm // challenge answered; "" = SHA-256
		mod  func(*creds)
		want error
	}{
		{"ok", "", func(c *creds) {}, nil},
		{"wrong password", "", func(c *creds) {
			c.Response = clientResponse("SHA-256", "alice", testRealm, "wrong", "AUTH", testURI, c.Nonce, c.NC, c.CNonce)
		}, ErrBadResponse},
		{"wrong method", "", func(c *creds) {
			c.Response = clientResponse("SHA-256", "alice", testRealm, "!secret", "SEND", testURI, c.Nonce, c.NC, c.CNonce)
		}, ErrBadResponse},
		{"response uppercase ok", "", func(c *creds) { c.Response = strings.ToUpper(c.Response) }, nil},
		{"response truncated", "", func(c *creds) { c.Response = c.Response[:32] }, ErrBadResponse},
		{"response of other nc", "", func(c *creds) { c.NC = "00000002" }, ErrBadResponse},
		{"unknown user", "", func(c *creds) {
			c.Username = "mallory"
			c.Response = clientResponse("SHA-256", "mallory", testRealm, "!secret", "AUTH", testURI, c.Nonce, c.NC, c.CNonce)
		}, ErrUnknownUser},
		{"user case matters", "", func(c *creds) { c.Username = "Alice" }, ErrUnknownUser},
		{"wrong realm", "", func(c *creds) { c.Realm = "other.example.com" }, ErrRealm},
		{"realm case matters", "", func(c *creds) { c.Realm = "RELAY.example.com" }, ErrRealm},
		{"algorithm case-insensitive", "", func(c *creds) { c.Algorithm = "sha-256" }, nil},
		{"algorithm unknown", "", func(c *creds) { c.Algorithm = "SHA-512-256" }, ErrAlgorithm},
		{"algorithm sess", "", func(c *creds) { c.Algorithm = "MD5-sess" }, ErrAlgorithm},
		{"algorithm absent means MD5", MD5, func(c *creds) { c.Algorithm = "-" }, nil},
		{"qop missing", "", func(c *creds) { c.QOP = "-" }, ErrQop},
		{"qop auth-int", "", func(c *creds) { c.QOP = "auth-int" }, ErrQop},
		{"qop quoted list", "", func(c *creds) { c.QOP = `"auth,auth-int"` }, ErrQop},
		{"qop quoted auth ok", "", func(c *creds) { c.QOP = `"auth"` }, nil},
		{"qop uppercase hashed as sent", "", func(c *creds) {
			c.QOP = "AUTH"
			ha1 := h("SHA-256", "alice:"+testRealm+":!secret")
			c.Response = h("SHA-256", ha1+":"+c.Nonce+":"+c.NC+":"+c.CNonce+":AUTH:"+h("SHA-256", "AUTH:"+testURI))
		}, nil},
		{"missing username", "", func(c *creds) { c.Username = "-" }, ErrMalformed},
		{"empty username", "", func(c *creds) { c.Username = "" }, ErrMalformed},
		{"missing realm", "", func(c *creds) { c.Realm = "-" }, ErrMalformed},
		{"missing nonce", "", func(c *creds) { c.Nonce = "-" }, ErrMalformed},
		{"missing uri", "", func(c *creds) { c.URI = "-" }, ErrMalformed},
		{"missing response", "", func(c *creds) { c.Response = "-" }, ErrMalformed},
		{"missing cnonce", "", func(c *creds) { c.CNonce = "-" }, ErrMalformed},
		{"empty cnonce", "", func(c *creds) { c.CNonce = "" }, ErrMalformed},
		{"missing nc", "", func(c *creds) { c.NC = "-" }, ErrMalformed},
		{"nc short", "", func(c *creds) { c.NC = "0000001" }, ErrMalformed},
		{"nc long", "", func(c *creds) { c.NC = "000000001" }, ErrMalformed},
		{"nc not hex", "", func(c *creds) { c.NC = "0000000g" }, ErrMalformed},
		{"nc zero", "", func(c *creds) { c.NC = "00000000" }, ErrMalformed},
		{"nc signed", "", func(c *creds) { c.NC = "+0000001" }, ErrMalformed},
		{"userhash", "", func(c *creds) { c.Opaque += `", userhash="true` }, ErrMalformed},
		{"username*", "", func(c *creds) { c.Username = "-"; c.Opaque += `", username*="UTF-8''alice` }, ErrMalformed},
		{"not digest", "", func(c *creds) { c.Username = "x\"junk" }, ErrMalformed},
		{"opaque absent ok", "", func(c *creds) { c.Opaque = "-" }, nil},
		{"opaque wrong", "", func(c *creds) { c.Opaque = "AAAA" }, ErrNonce},
		{"nonce bad MAC", "", func(c *creds) { c.Nonce = flip(c.Nonce, 40) }, ErrNonce},
		{"nonce time altered", "", func(c *creds) { c.Nonce = flip(c.Nonce, 5) }, ErrNonce},
		{"nonce truncated", "", func(c *creds) { c.Nonce = c.Nonce[:42] }, ErrNonce},
		{"nonce extended", "", func(c *creds) { c.Nonce += "A" }, ErrNonce},
		{"nonce not base64", "", func(c *creds) { c.Nonce = "!" + c.Nonce[1:] }, ErrNonce},
		{"nonce std base64", "", func(c *creds) { c.Nonce = "+" + c.Nonce[1:] }, ErrNonce},
		{"nonce RFC", "", func(c *creds) { c.Nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093" }, ErrNonce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAuth(t, nil)
			alg := tc.alg
			if alg == "" {
				alg = SHA256
			}
			c := answer(t, challengeFor(t, a, alg, false), "alice", "!secret", "00000001", "")
			tc.mod(&c)
			_, err := a.Verify([]byte(c.String()), "AUTH")
			checkErr(t, err, tc.want)
		})
	}
	t.Run("garbage", func(t *testing.T) {
		a, _ := newTestAuth(t, nil)
		for _, v := range []string{"", "Digest", "Basic YWxpY2U6c2VjcmV0", "Digest ,", `Digest username="a`, "Digest a=b, a=c"} {
			_, err := a.Verify([]byte(v), "AUTH")
			checkErr(t, err, ErrMalformed)
		}
	})
}

// flip changes the base64url character at i.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func TestAlgorithmCrossing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offered []Algorithm
		user    string
		pass    string
		answer  string
		want    error
	}{
		// An old client ignores algorithm=SHA-256 and answers MD5.
		{"MD5 answer to SHA-256 challenge, MD5 offered", nil, "alice", "!secret", "MD5", nil},
		{"MD5 answer without algorithm=, MD5 offered", nil, "alice", "!secret", "-", nil},
		{"MD5 answer, MD5 not offered", []Algorithm{SHA256}, "alice", "!secret", "MD5", ErrAlgorithm},
		{"no algorithm=, MD5 not offered", []Algorithm{SHA256}, "alice", "!secret", "-", ErrAlgorithm},
		{"SHA-256 answer, only MD5 offered", []Algorithm{MD5}, "alice", "!secret", "SHA-256", ErrAlgorithm},
		{"MD5-only HA1 user answers SHA-256", nil, "dave", "pw", "SHA-256", ErrUserAlgorithm}, // see TestUserAlgorithmOffer
		{"MD5-only HA1 user answers MD5", nil, "dave", "pw", "MD5", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAuth(t, func(c *Config) { c.Algorithms = tc.offered })
			ch := a.Challenges(false)[0]
			hashAlg := tc.answer
			if hashAlg == "-" {
				hashAlg = "MD5"
			}
			c := answer(t, ch, tc.user, tc.pass, "00000001", hashAlg)
			c.Algorithm = tc.answer
			_, err := a.Verify([]byte(c.String()), "AUTH")
			checkErr(t, err, tc.want)
		})
	}
}

func TestStale(t *testing.T) {
	for _, tc := range []struct {
		name    string
		advance time.Duration
		pass    string
		want    error
	}{
		{"fresh", 29 * time.Second, "!secret", nil},
		{"at TTL", 30 * time.Second, "!secret", nil},
		{"past TTL", 30*time.Second + 1, "!secret", ErrStale},
		{"long past", 24 * time.Hour, "!secret", ErrStale},
		{"past TTL, wrong password", time.Hour, "nope", ErrBadResponse},
		{"from the future", -31 * time.Second, "!secret", ErrStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, clk := newTestAuth(t, nil)
			c := answer(t, challengeFor(t, a, SHA256, false), "alice", tc.pass, "00000001", "")
			clk.Advance(tc.advance)
			_, err := a.Verify([]byte(c.String()), "AUTH")
			checkErr(t, err, tc.want)
		})
	}
	t.Run("stale then fresh challenge", func(t *testing.T) {
		a, clk := newTestAuth(t, func(c *Config) { c.NonceTTL = time.Second })
		c := answer(t, challengeFor(t, a, SHA256, false), "alice", "!secret", "00000001", "")
		_, err := a.Verify([]byte(c.String()), "AUTH")
		checkErr(t, err, nil)
		clk.Advance(2 * time.Second)
		c.NC = "00000002"
		c.Response = clientResponse("SHA-256", "alice", testRealm, "!secret", "AUTH", testURI, c.Nonce, c.NC, c.CNonce)
		_, err = a.Verify([]byte(c.String()), "AUTH")
		checkErr(t, err, ErrStale)
		ch := challengeFor(t, a, SHA256, true)
		if !strings.Contains(string(ch), "stale=true") {
			t.Fatalf("%s", ch)
		}
		c = answer(t, ch, "alice", "!secret", "00000001", "")
		_, err = a.Verify([]byte(c.String()), "AUTH")
		checkErr(t, err, nil)
		if n := a.tracker.len(); n != 1 {
			t.Errorf("tracked %d, want 1 (expired entry dropped)", n)
		}
	})
}

// use answers nonce with nc and verifies it.
func use(t *testing.T, a *Authenticator, nonce string, nc uint32) error {
	t.Helper()
	c := creds{Username: "alice", Realm: testRealm, Nonce: nonce, URI: testURI, Algorithm: "MD5",
		QOP: "auth", NC: fmt.Sprintf("%08x", nc), CNonce: "cn", Opaque: "-"}
	c.Response = clientResponse("MD5", "alice", testRealm, "!secret", "AUTH", testURI, nonce, c.NC, c.CNonce)
	_, err := a.Verify([]byte(c.String()), "AUTH")
	return err
}

func nonceOf(t *testing.T, a *Authenticator) string {
	t.Helper()
	d, err := msrp.ParseDigest(a.Challenges(false)[0])
	if err != nil {
		t.Fatal(err)
	}
	n, _ := d.Get("nonce")
	return n
}

func TestReplay(t *testing.T) {
	a, _ := newTestAuth(t, nil)
	n := nonceOf(t, a)
	steps := []struct {
		nc   uint32
		want error
	}{
		{1, nil}, {1, ErrReplay}, {2, nil}, {2, ErrReplay}, {1, ErrReplay},
		{5, nil}, {3, ErrReplay}, {6, nil}, {0xffffffff, nil}, {0xffffffff, ErrReplay},
	}
	for i, s := range steps {
		if err := use(t, a, n, s.nc); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("step %d nc=%d: err %v, want %v", i, s.nc, err, s.want)
		}
	}
	// A wrong response records nothing: nc 7 still works after a failed 100.
	m := nonceOf(t, a)
	c := creds{Username: "alice", Realm: testRealm, Nonce: m, URI: testURI, Algorithm: "MD5", QOP: "auth", NC: "00000100", CNonce: "x", Response: strings.Repeat("0", 32), Opaque: "-"}
	_, err := a.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, ErrBadResponse)
	checkErr(t, use(t, a, m, 7), nil)
	// Nonces are independent.
	checkErr(t, use(t, a, nonceOf(t, a), 1), nil)
}

func TestEviction(t *testing.T) {
	t.Run("MaxTracked=2", func(t *testing.T) {
		a, clk := newTestAuth(t, func(c *Config) { c.MaxTracked = 2 })
		var n [5]string
		for i := range n {
			n[i] = nonceOf(t, a)
			clk.Advance(time.Millisecond)
		}
		checkErr(t, use(t, a, n[1], 1), nil)
		checkErr(t, use(t, a, n[2], 1), nil)
		checkErr(t, use(t, a, n[3], 1), nil) // evicts n[1]
		checkErr(t, use(t, a, n[1], 1), ErrStale)
		checkErr(t, use(t, a, n[1], 2), ErrStale) // evicted: even a higher nc is refused
		checkErr(t, use(t, a, n[0], 1), ErrStale) // never used, but older than the evicted one
		checkErr(t, use(t, a, n[2], 1), ErrReplay)
		checkErr(t, use(t, a, n[2], 2), nil)
		checkErr(t, use(t, a, n[4], 1), nil) // evicts n[2]
		checkErr(t, use(t, a, n[2], 3), ErrStale)
		checkErr(t, use(t, a, n[3], 1), ErrReplay)
		checkErr(t, use(t, a, n[4], 1), ErrReplay)
		if got := a.tracker.len(); got != 2 {
			t.Errorf("tracked %d", got)
		}
	})
	t.Run("first use of an old nonce when full", func(t *testing.T) {
		a, clk := newTestAuth(t, func(c *Config) { c.MaxTracked = 2 })
		old := nonceOf(t, a)
		clk.Advance(time.Millisecond)
		x, y := nonceOf(t, a), nonceOf(t, a)
		checkErr(t, use(t, a, x, 1), nil)
		checkErr(t, use(t, a, y, 1), nil)
		checkErr(t, use(t, a, old, 1), nil) // accepted once, evicted at once
		checkErr(t, use(t, a, old, 1), ErrStale)
		checkErr(t, use(t, a, old, 2), ErrStale)
		checkErr(t, use(t, a, x, 1), ErrReplay)
	})
	// Random interleavings against an oracle: an (nonce, nc) pair is never
	// accepted unless nc is greater than every nc accepted for that nonce.
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprintf("random-%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			a, clk := newTestAuth(t, func(c *Config) {
				c.MaxTracked = 1 + r.IntN(4)
				c.NonceTTL = time.Duration(5+r.IntN(20)) * time.Millisecond
			})
			var nonces []string
			highest := map[string]uint32{}
			accepted := 0
			for range 400 {
				if len(nonces) == 0 || r.IntN(4) == 0 {
					nonces = append(nonces, nonceOf(t, a))
				}
				clk.Advance(time.Duration(r.IntN(3)) * time.Millisecond)
				n := nonces[r.IntN(len(nonces))]
				nc := uint32(1 + r.IntN(6))
				err := use(t, a, n, nc)
				switch {
				case err == nil:
					if nc <= highest[n] {
						t.Fatalf("replay accepted: nc %d after %d", nc, highest[n])
					}
					highest[n] = nc
					accepted++
				case errors.Is(err, ErrStale), errors.Is(err, ErrReplay):
				default:
					t.Fatalf("unexpected %v", err)
				}
				if a.tracker.len() > a.tracker.max {
					t.Fatalf("table %d > %d", a.tracker.len(), a.tracker.max)
				}
			}
			if accepted == 0 {
				t.Error("nothing accepted")
			}
		})
	}
}

// Nonces are bound to the relay (realm, URIs) and to the run (issue 14,
// defect 5): an Authorization captured at one relay is refused by another
// sharing its secret, and by the same relay after a restart, where the
// nonce-count table that would refuse a replay is empty. A correct answer
// to such a nonce gets ErrStale (a fresh challenge, stale=true: one round
// trip more for the client), never success.
func TestNonceBoundToRelayAndRun(t *testing.T) {
	users := testUsers(t)
	clk := newClock()
	mk := func(secret string, uris ...string) *Authenticator {
		t.Helper()
		a, err := New(Config{Realm: testRealm, URIs: testURIs(t, uris...), Secret: []byte(secret), Users: users, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a1 := mk(testSecret)
	c := answer(t, challengeFor(t, a1, SHA256, false), "alice", "!secret", "00000001", "")
	v := []byte(c.String())
	// The same relay restarted with the same secret and URIs: stale.
	restarted := mk(testSecret)
	_, err := restarted.Verify(v, "AUTH")
	checkErr(t, err, ErrStale)
	if CountsAsFailure(err) {
		t.Error("a nonce from before the restart counts as a failed AUTH")
	}
	// Another relay sharing secret and realm and naming testURI too (an
	// alias): stale; a relay that does not answer to testURI: ErrURI.
	_, err = mk(testSecret, "msrps://relay2.example.com:2855;tcp").Verify(v, "AUTH")
	checkErr(t, err, ErrStale)
	other := mk(testSecret)
	other.uris = testURIs(t, "msrps://relay2.example.com:2855;tcp")[1:]
	_, err = other.Verify(v, "AUTH")
	checkErr(t, err, ErrURI)
	// Another secret: stale all the same (a correct answer); random
	// secrets likewise.
	_, err = mk("another secret, 16+ bytes long").Verify(v, "AUTH")
	checkErr(t, err, ErrStale)
	r1, _ := New(Config{Realm: testRealm, URIs: testURIs(t), Users: users, Now: clk.Now})
	r2, _ := New(Config{Realm: testRealm, URIs: testURIs(t), Users: users, Now: clk.Now})
	c = answer(t, challengeFor(t, r1, SHA256, false), "alice", "!secret", "00000001", "")
	_, err = r2.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, ErrStale)
	_, err = r1.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, nil)
	// The original relay accepts it once.
	_, err = a1.Verify(v, "AUTH")
	checkErr(t, err, nil)
	_, err = a1.Verify(v, "AUTH")
	checkErr(t, err, ErrReplay)
	// A wrong answer to a foreign nonce is ErrNonce, a counted failure.
	c = answer(t, challengeFor(t, a1, SHA256, false), "alice", "wrong", "00000001", "")
	_, err = restarted.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, ErrNonce)
	// Same secret, other realm: nonces do not cross realms.
	b, _ := New(Config{Realm: "other.example.com", URIs: testURIs(t), Secret: []byte(testSecret), Users: users, Now: clk.Now})
	c = answer(t, challengeFor(t, a1, SHA256, false), "alice", "!secret", "00000001", "")
	c.Realm = "other.example.com"
	_, err = b.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, ErrNonce)
}

// The digest uri must name this relay (RFC 4976 §5), compared as MSRP
// URIs (RFC 4975 §6.1): a correct response for another URI is refused.
func TestDigestURIChecked(t *testing.T) {
	a, _ := newTestAuth(t, func(c *Config) { c.URIs = testURIs(t, "msrp://192.0.2.1:2855;tcp") })
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{testURI, nil},
		{"MSRPS://Relay.Example.COM:2855;TCP", nil},     // scheme, host, transport: case-insensitive
		{"msrps://bob@relay.example.com:2855;tcp", nil}, // userinfo is not compared
		{"msrp://192.0.2.1:2855;tcp", nil},
		{"msrp://203.0.113.9:9999;tcp", ErrURI}, // the one found
		{"msrps://relay.example.com:2856;tcp", ErrURI},
		{"msrps://relay.example.com;tcp", ErrURI}, // port absent is not 2855
		{"msrp://relay.example.com:2855;tcp", ErrURI},
		{"msrps://relay.example.com:2855;sctp", ErrURI},
		{"msrps://relay.example.com:2855/s1;tcp", ErrURI}, // a session of ours is not the relay
		{"msrps://relay2.example.com:2855;tcp", ErrURI},
		{"sip:relay.example.com", ErrURI},
		{"/", ErrURI},
	} {
		c := answer(t, challengeFor(t, a, MD5, false), "alice", "!secret", "00000001", "")
		c.URI = tc.uri
		c.Response = clientResponse("MD5", "alice", testRealm, "!secret", "AUTH", tc.uri, c.Nonce, c.NC, c.CNonce)
		_, err := a.Verify([]byte(c.String()), "AUTH")
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("uri %q: %v, want %v", tc.uri, err, tc.want)
		}
		if tc.want != nil && !CountsAsFailure(err) {
			t.Errorf("uri %q: not a counted failure", tc.uri)
		}
	}
	// A request URI supplied for credentials without uri is checked alike.
	c := answer(t, challengeFor(t, a, MD5, false), "alice", "!secret", "00000001", "")
	c.URI = "-"
	c.Response = clientResponse("MD5", "alice", testRealm, "!secret", "AUTH", "msrp://203.0.113.9:9999;tcp", c.Nonce, c.NC, c.CNonce)
	_, err := a.VerifyWithURI([]byte(c.String()), "AUTH", "msrp://203.0.113.9:9999;tcp")
	checkErr(t, err, ErrURI)
}

func TestVerifyWithURI(t *testing.T) {
	a, _ := newTestAuth(t, nil)
	const relayURI = "msrps://relay.example.com:2855;tcp"
	c := answer(t, challengeFor(t, a, MD5, false), "alice", "!secret", "00000001", "")
	c.URI = "-" // as in RFC 4976 §5.1 and SIP SIMPLE clients
	c.Response = clientResponse("MD5", "alice", testRealm, "!secret", "AUTH", relayURI, c.Nonce, c.NC, c.CNonce)
	_, err := a.Verify([]byte(c.String()), "AUTH")
	checkErr(t, err, ErrMalformed)
	res, err := a.VerifyWithURI([]byte(c.String()), "AUTH", relayURI)
	checkErr(t, err, nil)
	if res.URI != relayURI {
		t.Errorf("URI %q", res.URI)
	}
	// A uri in the credentials wins and is reported.
	c = answer(t, challengeFor(t, a, MD5, false), "alice", "!secret", "00000001", "")
	res, err = a.VerifyWithURI([]byte(c.String()), "AUTH", "msrp://elsewhere;tcp")
	checkErr(t, err, nil)
	if res.URI != testURI {
		t.Errorf("URI %q", res.URI)
	}
}

func TestNewErrors(t *testing.T) {
	users := NewUsers()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no realm", Config{Users: users}},
		{"realm CTL", Config{Realm: "a\nb", Users: users}},
		{"no users", Config{Realm: "r"}},
		{"bad algorithm", Config{Realm: "r", Users: users, Algorithms: []Algorithm{"SHA-1"}}},
		{"duplicate algorithm", Config{Realm: "r", Users: users, Algorithms: []Algorithm{"MD5", "md5"}}},
		{"negative TTL", Config{Realm: "r", Users: users, NonceTTL: -1}},
		{"short secret", Config{Realm: "r", Users: users, Secret: []byte("short")}},
		{"negative MaxTracked", Config{Realm: "r", Users: users, MaxTracked: -1}},
	} {
		tc.cfg.URIs = testURIs(t)
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no URIs", Config{Realm: "r", Users: users}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	a, err := New(Config{Realm: "r", Users: users, URIs: testURIs(t)})
	if err != nil {
		t.Fatal(err)
	}
	if a.ttl != DefaultNonceTTL || a.tracker.max != DefaultMaxTracked || len(a.secret) != 32 ||
		fmt.Sprint(a.Algorithms()) != "[SHA-256 MD5]" || a.Realm() != "r" {
		t.Errorf("defaults: %v %v %d %v", a.ttl, a.tracker.max, len(a.secret), a.Algorithms())
	}
}

func TestConcurrent(t *testing.T) {
	a, _ := newTestAuth(t, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := map[string]int{}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				alg := []Algorithm{MD5, SHA256}[(g+i)%2]
				c := answer(t, challengeFor(t, a, alg, false), "alice", "!secret", "00000001", "")
				v := []byte(c.String())
				// Every goroutine also replays a shared value.
				for range 2 {
					if _, err := a.Verify(v, "AUTH"); err == nil {
						mu.Lock()
						ok[string(v)]++
						mu.Unlock()
					} else if !errors.Is(err, ErrReplay) {
						t.Error(err)
					}
				}
				_ = a.users.Len()
			}
		}()
	}
	wg.Wait()
	for v, n := range ok {
		if n != 1 {
			t.Fatalf("accepted %d times: %s", n, v)
		}
	}
	if len(ok) != 400 {
		t.Errorf("%d accepted", len(ok))
	}
}
