package relay_test

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// rawAuth speaks AUTH on a plain socket, so that a test can write any
// Authorization it likes (a replayed one, one for another uri).
type rawAuth struct {
	t  *testing.T
	nc net.Conn
	rd *msrp.Reader
	w  *msrp.Writer
	to string // To-Path: the relay's URI
}

func dialRawAuth(t *testing.T, addr, to string) *rawAuth {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawAuth{t: t, nc: nc, rd: msrp.NewReader(bufio.NewReader(nc), msrp.Limits{}), w: msrp.NewWriter(nc), to: to}
}

// auth sends an AUTH (with authz unless "") and returns the response code
// and its first WWW-Authenticate challenge.
func (c *rawAuth) auth(authz string) (int, msrp.Digest) {
	c.t.Helper()
	if err := c.w.StartRequest(nil, "AUTH"); err != nil {
		c.t.Fatal(err)
	}
	c.w.HeaderString(msrp.HdrToPath, c.to)
	c.w.HeaderString(msrp.HdrFromPath, "msrp://127.0.0.1:9/me;tcp")
	if authz != "" {
		c.w.HeaderString(msrp.HdrAuthorization, authz)
	}
	if err := c.w.End(msrp.FlagEnd); err != nil {
		c.t.Fatal(err)
	}
	f, err := c.rd.ReadFrame()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := f.Body().WriteTo(io.Discard); err != nil {
		c.t.Fatal(err)
	}
	d, _ := msrp.ParseDigest(f.Get(msrp.HdrWWWAuthenticate))
	return f.StatusCode, d
}

// answerDigest is the Authorization answering challenge ch (RFC 7616
// §3.4.1, qop=auth) for user with digest uri uri, written independently of
// relay/auth.
func answerDigest(ch msrp.Digest, user, uri, nc string) string {
	realm, _ := ch.Get("realm")
	nonce, _ := ch.Get("nonce")
	alg, _ := ch.Get("algorithm")
	newHash := md5.New
	if alg == "SHA-256" {
		newHash = sha256.New
	}
	h := func(s string) string {
		var x hash.Hash = newHash()
		x.Write([]byte(s))
		return hex.EncodeToString(x.Sum(nil))
	}
	ha1 := h(user + ":" + realm + ":" + testUsers[user])
	resp := h(ha1 + ":" + nonce + ":" + nc + ":c0ffee:auth:" + h("AUTH:"+uri))
	return string(msrp.AppendDigest(nil, "Digest",
		msrp.DigestParam{Name: "username", Value: user, Quoted: true},
		msrp.DigestParam{Name: "realm", Value: realm, Quoted: true},
		msrp.DigestParam{Name: "nonce", Value: nonce, Quoted: true},
		msrp.DigestParam{Name: "uri", Value: uri, Quoted: true},
		msrp.DigestParam{Name: "algorithm", Value: alg},
		msrp.DigestParam{Name: "qop", Value: "auth"},
		msrp.DigestParam{Name: "nc", Value: nc},
		msrp.DigestParam{Name: "cnonce", Value: "c0ffee", Quoted: true},
		msrp.DigestParam{Name: "response", Value: resp, Quoted: true}))
}

const sharedNonceSecret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// A correct response for a digest uri that is not this relay's gets 401,
// counted as a failed AUTH (RFC 4976 §5; issue 14, defect 5).
func TestAuthDigestURIMustNameRelay(t *testing.T) {
	tr := startRelay(t, nil)
	c := dialRawAuth(t, tr.addr(), tr.uri)
	_, ch := c.auth("")
	if code, _ := c.auth(answerDigest(ch, "alice", "msrp://203.0.113.9:9999;tcp", "00000001")); code != 401 {
		t.Fatalf("AUTH with digest uri of another relay: %d, want 401", code)
	}
	if st := tr.Stats(); st.AuthFailed != 1 || st.AuthOK != 0 {
		t.Fatalf("AuthFailed %d, AuthOK %d; want 1 and 0", st.AuthFailed, st.AuthOK)
	}
	_, ch = c.auth("")
	if code, _ := c.auth(answerDigest(ch, "alice", tr.uri, "00000001")); code != 200 {
		t.Fatalf("AUTH with the relay's own uri: %d", code)
	}
}

// Two relays share nonce_secret and realm: an Authorization captured at
// one is refused by the other.
func TestAuthReplayAtSecondRelay(t *testing.T) {
	mod := func(c *relay.Config) { c.Auth.NonceSecret, c.Auth.Realm = sharedNonceSecret, "cluster.example" }
	r1, r2 := startRelay(t, mod), startRelay(t, mod)
	c1 := dialRawAuth(t, r1.addr(), r1.uri)
	_, ch := c1.auth("")
	captured := answerDigest(ch, "alice", r1.uri, "00000001")
	c2 := dialRawAuth(t, r2.addr(), r2.uri)
	if code, _ := c2.auth(captured); code != 401 {
		t.Fatalf("Authorization of relay 1 replayed at relay 2: %d, want 401", code)
	}
	// Even with a uri naming relay 2 (which the capturer cannot make
	// without the password), relay 1's nonce is refused by relay 2.
	if code, d := c2.auth(answerDigest(ch, "alice", r2.uri, "00000001")); code != 401 {
		t.Fatalf("relay 1's nonce at relay 2: %d, want 401", code)
	} else if stale, _ := d.Get("stale"); stale != "true" {
		t.Fatalf("relay 1's nonce at relay 2, correctly answered: challenge %v, want stale=true", d)
	}
	if code, _ := c1.auth(captured); code != 200 {
		t.Fatalf("relay 1 refuses its own Authorization: %d", code)
	}
}

// A nonce issued before a restart (same nonce_secret, same address) is
// answered with a fresh challenge with stale=true, not accepted and not
// counted as a failure; the answer to that challenge succeeds.
func TestAuthNonceFromBeforeRestart(t *testing.T) {
	cfg := relay.Config{
		Listen: []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:0"}},
		Users:  users(t),
		Logger: slog.New(slog.DiscardHandler),
		Auth:   relay.Auth{NonceSecret: sharedNonceSecret},
		Limits: relay.Limits{MaxAuthFailures: 1},
	}
	run := func() (*relay.Relay, func()) { return runRelay(t, cfg) }
	r, stop := run()
	addr, uri := r.Addrs()[0].String(), r.URIs()[0].String()
	c := dialRawAuth(t, addr, uri)
	_, ch := c.auth("")
	used := answerDigest(ch, "alice", uri, "00000001")
	if code, _ := c.auth(used); code != 200 {
		t.Fatalf("AUTH before the restart: %d", code)
	}
	unused := answerDigest(ch, "alice", uri, "00000002")
	stop()

	cfg.Listen[0].Addr = addr // the same relay, restarted
	r, stop = run()
	defer stop()
	for _, authz := range []string{used, unused} {
		c = dialRawAuth(t, addr, uri)
		code, d := c.auth(authz)
		if stale, _ := d.Get("stale"); code != 401 || stale != "true" {
			t.Fatalf("Authorization from before the restart: %d, challenge %v; want 401 with stale=true", code, d)
		}
		if code, _ := c.auth(answerDigest(d, "alice", uri, "00000001")); code != 200 {
			t.Fatalf("answer to the stale challenge: %d", code)
		}
	}
	if st := r.Stats(); st.AuthFailed != 0 || st.AuthOK != 2 {
		t.Fatalf("AuthFailed %d, AuthOK %d; want 0 and 2", st.AuthFailed, st.AuthOK)
	}
}
