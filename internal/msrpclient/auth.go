package msrpclient

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// ErrNoChallenge: a 401 carried no usable Digest challenge (MD5 or SHA-256).
var ErrNoChallenge = errors.New("msrpclient: 401 without a usable Digest challenge")

// ErrRspauth: the relay's Authentication-Info rspauth did not verify.
var ErrRspauth = errors.New("msrpclient: Authentication-Info rspauth mismatch")

// Auth authenticates at the relay relayURI (RFC 4976 §5.1): an AUTH without
// credentials, expecting a 401 Digest challenge, then an AUTH with
// Authorization (RFC 7616, qop=auth) and Expires when expires > 0. It
// returns the Use-Path value (space-separated URIs) and Expires of the 200.
// A 401 with stale=true is retried once with the new nonce. A non-200
// final response gives a *StatusError.
func (c *Client) Auth(ctx context.Context, relayURI, user, password string, expires int) (usePath string, expiresGot int, err error) {
	return c.AuthPath(ctx, []string{relayURI}, user, password, expires)
}

// AuthPath is Auth with a To-Path of several URIs: an AUTH to the last
// relay, routed through the ones before it, at which the client must have
// authenticated already (RFC 4976 §5.1: To-Path "R1;tcp R2;tcp"). The
// digest uri is the rightmost To-Path URI (RFC 4976 §9.1).
func (c *Client) AuthPath(ctx context.Context, toPath []string, user, password string, expires int) (usePath string, expiresGot int, err error) {
	if len(toPath) == 0 {
		return "", 0, errors.New("msrpclient: AUTH without To-Path")
	}
	relayURI := toPath[len(toPath)-1]
	to := strings.Join(toPath, " ")
	r, err := c.auth(ctx, to, "", expires)
	if err != nil {
		return "", 0, err
	}
	for attempt := 0; ; attempt++ {
		switch r.code {
		case 200:
			return c.authOK(r)
		case 401:
		default:
			return "", 0, fmt.Errorf("msrpclient: AUTH: %w", &StatusError{Code: r.code, Comment: r.comment})
		}
		ch, err := pickChallenge(r)
		if err != nil {
			return "", 0, err
		}
		if attempt > 0 {
			if stale, _ := ch.Get("stale"); !strings.EqualFold(stale, "true") || attempt > 1 {
				return "", 0, fmt.Errorf("msrpclient: AUTH with credentials: %w", &StatusError{Code: r.code, Comment: r.comment})
			}
		}
		cred, verify, err := digestCredentials(ch, "AUTH", relayURI, user, password)
		if err != nil {
			return "", 0, err
		}
		if r, err = c.auth(ctx, to, cred, expires); err != nil {
			return "", 0, err
		}
		if r.code == 200 {
			if ai, ok := r.get(msrp.HdrAuthenticationInf); ok {
				if err := verify(ai); err != nil {
					return "", 0, err
				}
			}
		}
	}
}

func (c *Client) authOK(r *response) (string, int, error) {
	use, ok := r.get(msrp.HdrUsePath)
	if !ok {
		return "", 0, errors.New("msrpclient: AUTH 200 without Use-Path")
	}
	if _, err := msrp.ParsePath(use); err != nil {
		return "", 0, fmt.Errorf("msrpclient: AUTH 200 Use-Path: %w", err)
	}
	exp := 0
	if v, ok := r.get(msrp.HdrExpires); ok {
		n, err := msrp.ParseExpires([]byte(v))
		if err != nil {
			return "", 0, fmt.Errorf("msrpclient: AUTH 200: %w", err)
		}
		exp = int(n)
	}
	return use, exp, nil
}

func (c *Client) auth(ctx context.Context, toPath, cred string, expires int) (*response, error) {
	tid := string(msrp.TransactIDFor(nil, nil))
	r, err := c.roundTrip(ctx, tid, func(w *msrp.Writer) error {
		if err := w.StartRequest([]byte(tid), "AUTH"); err != nil {
			return err
		}
		w.HeaderString(msrp.HdrToPath, toPath)
		w.HeaderString(msrp.HdrFromPath, c.fromPath)
		if cred != "" {
			w.HeaderString(msrp.HdrAuthorization, cred)
		}
		if expires > 0 {
			w.HeaderString(msrp.HdrExpires, strconv.Itoa(expires))
		}
		return w.End(msrp.FlagEnd)
	})
	if err != nil {
		return nil, fmt.Errorf("msrpclient: AUTH: %w", err)
	}
	return r, nil
}

// pickChallenge returns the first WWW-Authenticate Digest challenge whose
// algorithm (absent = MD5) is MD5 or SHA-256.
func pickChallenge(r *response) (msrp.Digest, error) {
	for _, h := range r.headers {
		if !strings.EqualFold(h.Name, msrp.HdrWWWAuthenticate) {
			continue
		}
		d, err := msrp.ParseDigest([]byte(h.Value))
		if err != nil {
			continue
		}
		if _, ok := d.Get("nonce"); !ok {
			continue
		}
		alg, ok := d.Get("algorithm")
		if !ok || strings.EqualFold(alg, "MD5") || strings.EqualFold(alg, "SHA-256") {
			return d, nil
		}
	}
	return nil, ErrNoChallenge
}

// DigestAuthorization answers the Digest challenge ch (RFC 7616 §3.4,
// qop=auth when offered) for a caller that runs AUTH on its own connection
// (the lean engine of msrpclient/load): the Authorization value, and a
// check of the rspauth in the 200's Authentication-Info.
func DigestAuthorization(ch msrp.Digest, method, uri, user, password string) (string, func(authInfo string) error, error) {
	return digestCredentials(ch, method, uri, user, password)
}

// digestCredentials builds an Authorization value for challenge ch
// (RFC 7616 §3.4, qop=auth when offered) and a function verifying the
// rspauth of the Authentication-Info of the 200.
func digestCredentials(ch msrp.Digest, method, uri, user, password string) (string, func(ai string) error, error) {
	realm, _ := ch.Get("realm")
	nonce, _ := ch.Get("nonce")
	alg, hasAlg := ch.Get("algorithm")
	newHash := md5.New
	if strings.EqualFold(alg, "SHA-256") {
		newHash = sha256.New
	}
	h := func(s string) string { return hexHash(newHash, s) }
	qop := ""
	if q, ok := ch.Get("qop"); ok {
		for v := range strings.SplitSeq(q, ",") {
			if strings.EqualFold(strings.TrimSpace(v), "auth") {
				qop = "auth"
			}
		}
		if qop == "" {
			return "", nil, fmt.Errorf("%w: qop %q offers no \"auth\"", ErrNoChallenge, q)
		}
	}
	var cn [12]byte
	_, _ = rand.Read(cn[:])
	cnonce := hex.EncodeToString(cn[:])
	const nc = "00000001"
	ha1 := h(user + ":" + realm + ":" + password)
	kd := func(ha2 string) string {
		if qop == "" { // RFC 2069 compatibility
			return h(ha1 + ":" + nonce + ":" + ha2)
		}
		return h(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":" + qop + ":" + ha2)
	}
	params := []msrp.DigestParam{
		{Name: "username", Value: user, Quoted: true},
		{Name: "realm", Value: realm, Quoted: true},
		{Name: "nonce", Value: nonce, Quoted: true},
		{Name: "uri", Value: uri, Quoted: true},
		{Name: "response", Value: kd(h(method + ":" + uri)), Quoted: true},
	}
	if hasAlg {
		params = append(params, msrp.DigestParam{Name: "algorithm", Value: alg})
	}
	if qop != "" {
		params = append(params,
			msrp.DigestParam{Name: "qop", Value: qop},
			msrp.DigestParam{Name: "cnonce", Value: cnonce, Quoted: true},
			msrp.DigestParam{Name: "nc", Value: nc})
	}
	if op, ok := ch.Get("opaque"); ok {
		params = append(params, msrp.DigestParam{Name: "opaque", Value: op, Quoted: true})
	}
	verify := func(ai string) error {
		d, err := msrp.ParseAuthenticationInfo([]byte(ai))
		if err != nil {
			return fmt.Errorf("msrpclient: Authentication-Info: %w", err)
		}
		got, ok := d.Get("rspauth")
		if !ok {
			return nil
		}
		if want := kd(h(":" + uri)); !strings.EqualFold(got, want) {
			return fmt.Errorf("%w: got %s", ErrRspauth, got)
		}
		return nil
	}
	return string(msrp.AppendDigest(nil, "Digest", params...)), verify, nil
}

func hexHash(newHash func() hash.Hash, s string) string {
	hh := newHash()
	hh.Write([]byte(s))
	return hex.EncodeToString(hh.Sum(nil))
}
