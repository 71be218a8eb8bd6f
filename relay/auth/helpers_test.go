package auth

import (
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

const (
	testRealm  = "relay.example.com"
	testURI    = "msrps://relay.example.com:2855;tcp"
	testSecret = "0123456789abcdef0123456789abcdef"
)

// clock is a fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// h is the test's own digest: hex of MD5 or SHA-256, straight from
// crypto/md5 and crypto/sha256.
func h(alg, s string) string {
	if strings.EqualFold(alg, "SHA-256") {
		return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))
	}
	return fmt.Sprintf("%x", md5.Sum([]byte(s)))
}

// clientResponse is RFC 7616 §3.4.1 for qop=auth, written independently of
// the package.
func clientResponse(alg, user, realm, pass, method, uri, nonce, nc, cnonce string) string {
	ha1 := h(alg, user+":"+realm+":"+pass)
	ha2 := h(alg, method+":"+uri)
	return h(alg, ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+ha2)
}

// creds are the parameters of an Authorization value, in order; a value
// of "-" drops the parameter.
type creds struct {
	Username, Realm, Nonce, URI, Algorithm, QOP, NC, CNonce, Response, Opaque string
}

func (c creds) String() string {
	var parts []string
	add := func(name, v string, quoted bool) {
		if v == "-" {
			return
		}
		if quoted {
			v = `"` + v + `"`
		}
		parts = append(parts, name+"="+v)
	}
	add("username", c.Username, true)
	add("realm", c.Realm, true)
	add("nonce", c.Nonce, true)
	add("uri", c.URI, true)
	add("algorithm", c.Algorithm, false)
	add("qop", c.QOP, false)
	add("nc", c.NC, false)
	add("cnonce", c.CNonce, true)
	add("response", c.Response, true)
	add("opaque", c.Opaque, true)
	return "Digest " + strings.Join(parts, ", ")
}

// answer answers challenge ch as a client would: user/pass, method AUTH,
// uri testURI, the given nc, cnonce "0a4f113b", and the challenge's
// algorithm unless alg is set.
func answer(t testing.TB, ch []byte, user, pass, nc, alg string) creds {
	t.Helper()
	d, err := msrp.ParseDigest(ch)
	if err != nil {
		t.Fatalf("challenge %q: %v", ch, err)
	}
	realm, _ := d.Get("realm")
	nonce, _ := d.Get("nonce")
	opaque, _ := d.Get("opaque")
	if alg == "" {
		alg, _ = d.Get("algorithm")
	}
	c := creds{Username: user, Realm: realm, Nonce: nonce, URI: testURI, Algorithm: alg,
		QOP: "auth", NC: nc, CNonce: "0a4f113b", Opaque: opaque}
	c.Response = clientResponse(alg, user, realm, pass, "AUTH", testURI, nonce, nc, c.CNonce)
	return c
}

// testURIs are the URIs of the relay under test: testURI.
func testURIs(t testing.TB, more ...string) []msrp.URI {
	t.Helper()
	var out []msrp.URI
	for _, s := range append([]string{testURI}, more...) {
		u, err := msrp.ParseURI(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func testUsers(t testing.TB) *Users {
	t.Helper()
	u := NewUsers()
	for _, user := range []User{
		{Name: "alice", Password: "!secret"},
		{Name: "carol", Password: `p"w\d:`},
		{Name: "bob", HA1: map[Algorithm]string{
			"MD5":     h("MD5", "bob:"+testRealm+":hunter2"),
			"sha-256": strings.ToUpper(h("SHA-256", "bob:"+testRealm+":hunter2")),
		}},
		{Name: "dave", HA1: map[Algorithm]string{MD5: h("MD5", "dave:"+testRealm+":pw")}},
	} {
		if err := u.Add(user); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

func newTestAuth(t testing.TB, mod func(*Config)) (*Authenticator, *clock) {
	t.Helper()
	c := newClock()
	cfg := Config{Realm: testRealm, URIs: testURIs(t), Secret: []byte(testSecret), Users: testUsers(t), Now: c.Now}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

// challengeFor returns the challenge of a for alg.
func challengeFor(t testing.TB, a *Authenticator, alg Algorithm, stale bool) []byte {
	t.Helper()
	for _, ch := range a.Challenges(stale) {
		if strings.Contains(string(ch), "algorithm="+string(alg)+",") {
			return ch
		}
	}
	t.Fatalf("no %s challenge", alg)
	return nil
}
