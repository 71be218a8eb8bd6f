package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// DefaultAlgorithms are the algorithms offered when Config.Algorithms is
// empty, in preference order.
func DefaultAlgorithms() []Algorithm { return []Algorithm{SHA256, MD5} }

// Defaults of Config.
const (
	DefaultNonceTTL   = 30 * time.Second
	DefaultMaxTracked = 100000
	// MinSecretLen is the shortest Config.Secret accepted.
	MinSecretLen = 16
)

// Config configures an Authenticator.
type Config struct {
	// Realm is the protection space, e.g. the relay's host name (RFC 4976
	// §5.1). Required; no control characters.
	Realm string
	// Algorithms are the algorithms offered, in preference order (one
	// challenge each); default [SHA-256, MD5]. Only MD5 and SHA-256 are
	// supported.
	Algorithms []Algorithm
	// NonceTTL is how long a nonce is fresh; default 30s. A correct answer
	// to an older nonce (with a valid MAC) gets ErrStale.
	NonceTTL time.Duration
	// URIs are the URIs that name this relay, e.g. its listeners' and its
	// public names. RFC 4976 §5: the digest uri of an AUTH is the URI of
	// the relay the AUTH is addressed to; it must equal one of these as
	// MSRP URIs compare (RFC 4975 §6.1), or Verify fails with ErrURI. They
	// are also bound into every nonce. At least one is required.
	URIs []msrp.URI
	// Secret is the HMAC key of nonces and opaque, at least MinSecretLen
	// bytes. Empty means 32 random bytes. Nonces are bound to the realm,
	// URIs and a random id drawn by New (see the package doc), so a fixed
	// secret no longer lets a restarted relay or another relay accept
	// them; it keeps the opaque value stable across restarts and relays.
	Secret []byte
	// MaxTracked bounds the nonce-count table (one entry per nonce in
	// use); default 100000. See the package doc for what happens when it
	// is full.
	MaxTracked int
	// Users are the accounts. Required; it may be filled in later.
	Users *Users
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// Authenticator issues challenges and verifies credentials. It is safe for
// concurrent use.
type Authenticator struct {
	realm     string
	algs      []Algorithm
	ttl       time.Duration
	secret    []byte
	bind      []byte // what nonce MACs bind besides the nonce: realm, URIs, start id
	uris      []msrp.URI
	opaque    string
	users     *Users
	now       func() time.Time
	tracker   *tracker
	dummyHA1  map[Algorithm]string
	lastIssue atomic.Int64 // Unix ns of the last nonce issued
}

// Result is a successful verification.
type Result struct {
	// User is the authenticated user name.
	User string
	// URI is the digest uri the client used (or the one supplied to
	// VerifyWithURI when the credentials had none); it names this relay
	// (Config.URIs).
	URI string
	// Algorithm is the algorithm the client used.
	Algorithm Algorithm
	// AuthInfo is a complete Authentication-Info value:
	// qop=auth, rspauth="<hex>", cnonce="<cnonce>", nc=<nc>
	AuthInfo []byte
}

// New checks cfg, fills in defaults and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Realm == "" {
		return nil, errors.New("auth: Config.Realm is empty")
	}
	if hasCTL(cfg.Realm) {
		return nil, fmt.Errorf("auth: Config.Realm %q has control characters", cfg.Realm)
	}
	if cfg.Users == nil {
		return nil, errors.New("auth: Config.Users is nil")
	}
	if len(cfg.URIs) == 0 {
		return nil, errors.New("auth: Config.URIs is empty (the URIs that name this relay)")
	}
	a := &Authenticator{realm: cfg.Realm, users: cfg.Users, ttl: cfg.NonceTTL, now: cfg.Now,
		uris: append([]msrp.URI(nil), cfg.URIs...)}
	if len(cfg.Algorithms) == 0 {
		a.algs = DefaultAlgorithms()
	} else {
		for _, name := range cfg.Algorithms {
			alg, ok := canonical(string(name))
			if !ok {
				return nil, fmt.Errorf("auth: algorithm %q not supported (want MD5 or SHA-256)", name)
			}
			for _, have := range a.algs {
				if have == alg {
					return nil, fmt.Errorf("auth: algorithm %s listed twice", alg)
				}
			}
			a.algs = append(a.algs, alg)
		}
	}
	switch {
	case a.ttl == 0:
		a.ttl = DefaultNonceTTL
	case a.ttl < 0:
		return nil, fmt.Errorf("auth: negative NonceTTL %v", a.ttl)
	}
	switch {
	case len(cfg.Secret) == 0:
		a.secret = make([]byte, 32)
		if _, err := rand.Read(a.secret); err != nil {
			return nil, fmt.Errorf("auth: random secret: %w", err)
		}
	case len(cfg.Secret) < MinSecretLen:
		return nil, fmt.Errorf("auth: Secret of %d bytes, want at least %d", len(cfg.Secret), MinSecretLen)
	default:
		a.secret = append([]byte(nil), cfg.Secret...)
	}
	maxTracked := cfg.MaxTracked
	switch {
	case maxTracked == 0:
		maxTracked = DefaultMaxTracked
	case maxTracked < 0:
		return nil, fmt.Errorf("auth: negative MaxTracked %d", maxTracked)
	}
	a.tracker = newTracker(maxTracked)
	// What every nonce MAC binds: this relay (realm and URIs) and this
	// start (16 random bytes), so that a nonce, and an Authorization that
	// answers it, is good at one relay during one run only: captured
	// credentials cannot be replayed at another relay sharing the secret,
	// nor after a restart, when the nonce-count table is empty.
	var start [16]byte
	if _, err := rand.Read(start[:]); err != nil {
		return nil, fmt.Errorf("auth: random start id: %w", err)
	}
	a.bind = append([]byte("msrpscope nonce v2\x00"), a.realm...)
	for _, u := range a.uris {
		a.bind = append(a.bind, 0)
		a.bind = u.Append(a.bind)
	}
	a.bind = append(a.bind, 0)
	a.bind = append(a.bind, start[:]...)
	if a.now == nil {
		a.now = time.Now
	}
	mac := hmac.New(sha256.New, a.secret)
	mac.Write([]byte("msrpscope auth opaque\x00"))
	mac.Write([]byte(a.realm))
	a.opaque = base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
	// Dummy HA1s for unknown users, so that they cost what a known user
	// costs; random, so that they match nothing.
	a.dummyHA1 = make(map[Algorithm]string, 2)
	for _, alg := range []Algorithm{MD5, SHA256} {
		b := make([]byte, hexLen(alg)/2)
		rand.Read(b)
		a.dummyHA1[alg] = hex.EncodeToString(b)
	}
	return a, nil
}

// Realm returns the realm.
func (a *Authenticator) Realm() string { return a.realm }

// Algorithms returns the offered algorithms, in preference order.
func (a *Authenticator) Algorithms() []Algorithm { return append([]Algorithm(nil), a.algs...) }

// Challenges returns one WWW-Authenticate value per offered algorithm, in
// preference order, for a 401, all with the same fresh nonce, e.g.
//
//	Digest realm="example.com", nonce="...", opaque="...", algorithm=SHA-256, qop="auth"
//
// followed by `, stale=true` when stale is set (after ErrStale).
func (a *Authenticator) Challenges(stale bool) [][]byte {
	return a.challenges(a.algs, stale, false)
}

// ChallengesAfter returns the WWW-Authenticate values of the 401 that
// answers an AUTH whose Verify failed with err:
//   - ErrUserAlgorithm: one challenge per algorithm the user has
//     credentials for (an *AlgorithmError's Offer), with stale=true, which
//     tells the client to answer again without asking its user
//     (RFC 7616 §3.3), and a nonce marked as such an offer: an answer to it
//     with an algorithm the user lacks is then ErrBadResponse;
//   - ErrStale: Challenges(true);
//   - anything else: Challenges(false).
func (a *Authenticator) ChallengesAfter(err error) [][]byte {
	var ae *AlgorithmError
	switch {
	case errors.As(err, &ae) && len(ae.Offer) > 0:
		return a.challenges(ae.Offer, true, true)
	case errors.Is(err, ErrStale):
		return a.Challenges(true)
	}
	return a.Challenges(false)
}

// CountsAsFailure reports whether a Verify error counts as a failed AUTH
// (towards a limit of failures per connection): every error but ErrStale
// (RFC 4976 §6.3) and ErrUserAlgorithm, which say nothing against the
// client's credentials.
func CountsAsFailure(err error) bool {
	return err != nil && !errors.Is(err, ErrStale) && !errors.Is(err, ErrUserAlgorithm)
}

// challenges makes one challenge per algorithm of algs with one fresh
// nonce; userOffer marks the nonce as a per-user offer (see
// ChallengesAfter).
func (a *Authenticator) challenges(algs []Algorithm, stale, userOffer bool) [][]byte {
	nonce := a.newNonce(a.now(), userOffer)
	out := make([][]byte, 0, len(algs))
	for _, alg := range algs {
		params := []msrp.DigestParam{
			{Name: "realm", Value: a.realm, Quoted: true},
			{Name: "nonce", Value: nonce, Quoted: true},
			{Name: "opaque", Value: a.opaque, Quoted: true},
			{Name: "algorithm", Value: string(alg)},
			{Name: "qop", Value: "auth", Quoted: true},
		}
		if stale {
			params = append(params, msrp.DigestParam{Name: "stale", Value: "true"})
		}
		out = append(out, msrp.AppendDigest(nil, "Digest", params...))
	}
	return out
}

// Verify checks the Authorization value of an AUTH request; method is the
// request's method ("AUTH"). The credentials must carry a uri. On success
// the nonce-count is recorded. Errors wrap one of the Err* values of this
// package.
func (a *Authenticator) Verify(authorization []byte, method string) (Result, error) {
	return a.VerifyWithURI(authorization, method, "")
}

// VerifyWithURI is Verify for credentials that may lack the uri parameter
// (RFC 4976 §7's grammar has none): requestURI, the URI the AUTH request
// was addressed to as written in its To-Path (the relay's own URI), is then
// used as the digest uri. When the credentials carry a uri, that is used
// and returned in Result.URI for the caller to check. An empty requestURI
// makes uri required, as in Verify.
func (a *Authenticator) VerifyWithURI(authorization []byte, method, requestURI string) (Result, error) {
	d, err := msrp.ParseDigest(authorization)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	get := func(name string) (string, error) {
		v, ok := d.Get(name)
		if !ok || v == "" {
			return "", fmt.Errorf("%w: missing %s", ErrMalformed, name)
		}
		return v, nil
	}
	username, err := get("username")
	if err != nil {
		if _, star := d.Get("username*"); star {
			return Result{}, fmt.Errorf("%w: username* not supported", ErrMalformed)
		}
		return Result{}, err
	}
	realm, err := get("realm")
	if err != nil {
		return Result{}, err
	}
	nonce, err := get("nonce")
	if err != nil {
		return Result{}, err
	}
	uri, ok := d.Get("uri")
	if !ok && requestURI != "" {
		uri = requestURI
	} else if uri == "" {
		return Result{}, fmt.Errorf("%w: missing uri", ErrMalformed)
	}
	response, err := get("response")
	if err != nil {
		return Result{}, err
	}
	if uh, ok := d.Get("userhash"); ok && strings.EqualFold(uh, "true") {
		return Result{}, fmt.Errorf("%w: userhash not supported", ErrMalformed)
	}
	qop, ok := d.Get("qop")
	if !ok {
		return Result{}, fmt.Errorf("%w: missing qop (qop=auth required)", ErrQop)
	}
	if !strings.EqualFold(qop, "auth") { // hashed as sent
		return Result{}, fmt.Errorf("%w: qop %q", ErrQop, qop)
	}
	cnonce, err := get("cnonce")
	if err != nil {
		return Result{}, err
	}
	nc, err := get("nc")
	if err != nil {
		return Result{}, err
	}
	count, err := parseNC(nc)
	if err != nil {
		return Result{}, err
	}
	if realm != a.realm {
		return Result{}, fmt.Errorf("%w: %q", ErrRealm, realm)
	}
	if !a.ownURI(uri) {
		return Result{}, fmt.Errorf("%w: %q", ErrURI, uri)
	}
	alg := MD5 // RFC 7616 §3.4: absent algorithm means MD5
	if name, ok := d.Get("algorithm"); ok {
		if alg, ok = canonical(name); !ok {
			return Result{}, fmt.Errorf("%w: %q", ErrAlgorithm, name)
		}
	}
	if !a.offers(alg) {
		return Result{}, fmt.Errorf("%w: %s", ErrAlgorithm, alg)
	}
	key, issued, userOffer, foreign, err := a.checkNonce(nonce)
	if err != nil {
		return Result{}, err
	}
	if op, ok := d.Get("opaque"); ok && !foreign && subtle.ConstantTimeCompare([]byte(op), []byte(a.opaque)) != 1 {
		return Result{}, fmt.Errorf("%w: opaque not ours", ErrNonce)
	}

	// The password check. Every path hashes one HA1 and one response and
	// compares, so that neither the answer nor the time tells unknown
	// users, password users, HA1 users and users without an HA1 for alg
	// apart. Unknown users and users without an HA1 for alg are compared
	// against a random dummy HA1.
	user, known := a.users.Lookup(username)
	ha1 := computeHA1(alg, username, a.realm, user.Password)
	haveHA1 := known && user.Password != ""
	if known && user.Password == "" {
		var stored string
		if stored, haveHA1 = user.HA1[alg]; haveHA1 {
			ha1 = stored
		}
	}
	if !haveHA1 {
		ha1 = a.dummyHA1[alg]
	}
	want := computeResponse(alg, ha1, nonce, nc, cnonce, qop, method, uri)
	got := []byte(strings.ToLower(response))
	match := subtle.ConstantTimeCompare(got, want) == 1
	if !known {
		return Result{}, fmt.Errorf("%w: %q", ErrUnknownUser, username)
	}
	if !haveHA1 && !userOffer {
		// A client takes the first challenge it supports (RFC 7616 §3.7),
		// and the first AUTH names no user to choose the offer by: offer
		// this user's algorithms now. Not to a nonce of such an offer, so
		// that a client which keeps answering with an algorithm the user
		// lacks runs into the failure limit.
		if offer := a.userAlgorithms(user); len(offer) > 0 {
			return Result{}, &AlgorithmError{User: username, Used: alg, Offer: offer}
		}
	}
	if foreign && (!match || !haveHA1) {
		return Result{}, fmt.Errorf("%w: bad nonce MAC", ErrNonce)
	}
	if !match || !haveHA1 {
		return Result{}, fmt.Errorf("%w: user %q, algorithm %s", ErrBadResponse, username, alg)
	}
	if foreign {
		// A correct answer to a nonce this Authenticator did not make: one
		// of an earlier run of this relay, or of another relay (shared
		// secret or not). Never accepted (its nonce-counts are not known
		// here); stale=true lets the client answer a fresh nonce without
		// asking its user (RFC 7616 §3.3).
		return Result{}, fmt.Errorf("%w: nonce of another run or relay", ErrStale)
	}

	// A correct answer: now freshness and nonce-count (RFC 7616 §3.3: stale
	// only for a valid digest).
	now := a.now()
	if age := now.Sub(issued); age > a.ttl || age < -a.ttl {
		return Result{}, fmt.Errorf("%w: nonce issued %v ago, TTL %v", ErrStale, age.Round(time.Millisecond), a.ttl)
	}
	if err := a.tracker.use(key, issued.UnixNano(), now.Add(-a.ttl).UnixNano(), count); err != nil {
		return Result{}, err
	}
	rspauth := computeResponse(alg, ha1, nonce, nc, cnonce, qop, "", uri)
	info := msrp.AppendDigest(nil, "",
		msrp.DigestParam{Name: "qop", Value: "auth"},
		msrp.DigestParam{Name: "rspauth", Value: string(rspauth), Quoted: true},
		msrp.DigestParam{Name: "cnonce", Value: cnonce, Quoted: true},
		msrp.DigestParam{Name: "nc", Value: nc},
	)
	return Result{User: username, URI: uri, Algorithm: alg, AuthInfo: info}, nil
}

// userAlgorithms returns the offered algorithms user has credentials for,
// in preference order.
func (a *Authenticator) userAlgorithms(user User) []Algorithm {
	var out []Algorithm
	for _, alg := range a.algs {
		if _, ok := user.HA1[alg]; ok || user.Password != "" {
			out = append(out, alg)
		}
	}
	return out
}

// ownURI reports whether uri, a digest uri, names this relay: it equals
// one of Config.URIs as MSRP URIs compare (RFC 4975 §6.1: scheme, host
// and transport case-insensitively, port, session-id; not userinfo).
func (a *Authenticator) ownURI(uri string) bool {
	u, err := msrp.ParseURI(uri)
	if err != nil {
		return false
	}
	for _, own := range a.uris {
		if own.Equal(u) {
			return true
		}
	}
	return false
}

func (a *Authenticator) offers(alg Algorithm) bool {
	for _, have := range a.algs {
		if have == alg {
			return true
		}
	}
	return false
}

// parseNC parses an nc-value: 8 hex digits (RFC 7616 says lowercase; any
// case is accepted, the value is hashed as sent), not zero.
func parseNC(nc string) (uint32, error) {
	if len(nc) != 8 || !isHex(nc) {
		return 0, fmt.Errorf("%w: nc %q is not 8 hex digits", ErrMalformed, nc)
	}
	n, err := strconv.ParseUint(nc, 16, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: bad nc %q", ErrMalformed, nc)
	}
	return uint32(n), nil
}

// Nonce layout: time(8) || random(8) || mac(16), base64url, no padding.
// The lowest bit of the first random byte is set in the nonces of
// per-user offers (ChallengesAfter); 63 random bits remain.
const (
	nonceRaw  = 32
	nonceLen  = 43 // base64.RawURLEncoding.EncodedLen(nonceRaw)
	nonceMAC  = 16
	nonceBody = nonceRaw - nonceMAC

	userOfferBit = 0x01 // in raw[8]
)

type nonceKey [nonceBody]byte

// newNonce makes a nonce, marked when userOffer is set. Issue times are
// strictly increasing per Authenticator, even when the clock is coarse or
// steps back, so that nonces issued later order later in the nonce-count
// table.
func (a *Authenticator) newNonce(now time.Time, userOffer bool) string {
	t := now.UnixNano()
	for {
		last := a.lastIssue.Load()
		if t <= last {
			t = last + 1
		}
		if a.lastIssue.CompareAndSwap(last, t) {
			break
		}
		t = now.UnixNano()
	}
	var raw [nonceRaw]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(t))
	rand.Read(raw[8:16])
	raw[8] &^= userOfferBit
	if userOffer {
		raw[8] |= userOfferBit
	}
	copy(raw[nonceBody:], a.nonceMAC(raw[:nonceBody]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

func (a *Authenticator) nonceMAC(body []byte) []byte {
	mac := hmac.New(sha256.New, a.secret)
	mac.Write(a.bind)
	mac.Write(body)
	return mac.Sum(nil)[:nonceMAC]
}

// checkNonce checks that nonce has the form of ours (else ErrNonce) and
// returns its key, its issue time and whether it is the nonce of a
// per-user offer; foreign reports a MAC that is not this Authenticator's
// (another run or relay, or forged): then nothing else of it is to be
// trusted.
func (a *Authenticator) checkNonce(nonce string) (key nonceKey, issued time.Time, userOffer, foreign bool, err error) {
	if len(nonce) != nonceLen {
		return key, time.Time{}, false, false, fmt.Errorf("%w: nonce of %d characters", ErrNonce, len(nonce))
	}
	var raw [nonceRaw]byte
	if n, err := base64.RawURLEncoding.Decode(raw[:], []byte(nonce)); err != nil || n != nonceRaw {
		return key, time.Time{}, false, false, fmt.Errorf("%w: nonce not base64url", ErrNonce)
	}
	if !hmac.Equal(raw[nonceBody:], a.nonceMAC(raw[:nonceBody])) {
		return key, time.Time{}, false, true, nil
	}
	copy(key[:], raw[:nonceBody])
	issued = time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	return key, issued, raw[8]&userOfferBit != 0, false, nil
}

// computeHA1 returns hex H(username ":" realm ":" password).
func computeHA1(alg Algorithm, username, realm, password string) string {
	h := newHash(alg)
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write([]byte(password))
	return hex.EncodeToString(h.Sum(nil))
}

// computeResponse returns lowercase hex
// H(ha1 ":" nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))
// (RFC 7616 §3.4.1). With method "" it is the rspauth of RFC 7616 §3.5,
// whose A2 is ":" uri.
func computeResponse(alg Algorithm, ha1, nonce, nc, cnonce, qop, method, uri string) []byte {
	h := newHash(alg)
	h.Write([]byte(method))
	h.Write([]byte{':'})
	h.Write([]byte(uri))
	ha2 := hex.EncodeToString(h.Sum(nil))
	h.Reset()
	for i, s := range [...]string{ha1, nonce, nc, cnonce, qop, ha2} {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(s))
	}
	return hex.AppendEncode(nil, h.Sum(nil))
}

func newHash(alg Algorithm) hash.Hash {
	if alg == SHA256 {
		return sha256.New()
	}
	return md5.New()
}
