// Package auth owns digest authentication of MSRP AUTH requests (RFC 4976 §5, RFC 7616): challenges, nonces, credential checks, users.
//
// # What it does
//
// A relay answers an AUTH request without an Authorization header with a
// 401 carrying [Authenticator.Challenges] (one WWW-Authenticate value per
// offered algorithm, all with the same nonce). When the retried AUTH
// carries an Authorization value, [Authenticator.Verify] checks it and, on
// success, returns the Authentication-Info value for the 200 (RFC 7616
// §3.5: qop, rspauth, cnonce, nc). Every failure is one of the sentinel
// errors of this package, wrapped with context; the doc comment of each says
// which MSRP response the relay should send. [Authenticator.ChallengesAfter]
// gives the challenges of the 401 that answers a failure, and
// [CountsAsFailure] says whether it counts against the client.
//
// Supported: algorithms MD5 and SHA-256 (RFC 7616 §3.3, both offered by
// default, SHA-256 first), qop=auth only. Not supported: the "-sess"
// algorithms, SHA-512-256, qop=auth-int (an AUTH has no body), userhash=true
// and username* (RFC 7616 §3.4.4, §3.4.5: rejected as ErrMalformed), and
// nextnonce in Authentication-Info.
//
// # Nonces
//
// A nonce is self-validating: base64url without padding (43 characters) of
// 8 bytes issue time (Unix nanoseconds, big endian) || 8 random bytes ||
// the first 16 bytes of HMAC-SHA256(secret, bind || time || random), where
// bind is the realm, the relay's URIs ([Config.URIs]) and 16 random bytes
// drawn by [New]: a nonce is good at one relay during one run only. It
// does not bind the algorithm, so a client that ignores algorithm= and
// answers a SHA-256 challenge with MD5 is accepted when MD5 is offered.
// The lowest bit of the first random byte marks the nonce of a per-user
// offer (see Users file below). The opaque value is HMAC-derived from the
// secret and realm, hence
// constant per secret and realm; when the client echoes an opaque it must
// be ours.
//
// The secret ([Config.Secret]) defaults to 32 random bytes drawn when
// [New] runs; a fixed one keeps the opaque stable. Whatever the secret, the
// nonce-count table below is per run and per relay, so a nonce made by
// another run or relay (its MAC is not ours) is never accepted: a correct
// answer to it gets ErrStale (a fresh challenge with stale=true, not a
// failure: after a restart a client pays one round trip, without asking its
// user), a wrong one ErrNonce. Relays sharing a secret used to accept each
// other's nonces, and a restarted relay its own, which let a captured
// Authorization be replayed there.
//
// # Nonce-count replay protection
//
// A nonce stays fresh for [Config.NonceTTL] (default 30 s); afterwards a
// correct answer to it gets ErrStale (401 with stale=true, so the client
// retries without asking the user again). Within its lifetime a nonce may be
// reused with increasing nonce counts: the Authenticator remembers, per
// nonce, the highest nc it accepted, and answers an nc that is not greater
// with ErrReplay. Nothing is recorded for a request whose response is wrong,
// so a guesser cannot burn a legitimate client's nonce counts.
//
// The table is bounded by [Config.MaxTracked] entries (default 100000, about
// 100 bytes each). Entries of nonces older than NonceTTL are dropped (they
// are stale anyway). When the table is full, the entry of the nonce with
// the oldest issue time is evicted (ties broken by the nonce's random part;
// one Authenticator issues strictly increasing times), and the
// Authenticator raises a watermark to that nonce: any nonce ordering at or
// before the watermark that is not in the table is answered ErrStale, never
// accepted. Since only nonces at or below the watermark are ever evicted or
// dropped, an evicted nonce can never be replayed; the price under a flood
// of more than MaxTracked distinct nonces per NonceTTL is that some
// legitimate clients get a stale=true 401 and retry with a fresh nonce.
//
// # The digest uri
//
// RFC 7616 requires the uri parameter, and [Authenticator.Verify] does too.
// It must name this relay (RFC 4976 §5: the URI the AUTH is addressed to):
// equal one of [Config.URIs] as MSRP URIs compare (RFC 4975 §6.1), else
// ErrURI, a failed AUTH. RFC 4976 §7's digest-response grammar, however,
// has no uri, its §5.1 examples carry none, and some MSRP clients omit it.
// [Authenticator.VerifyWithURI] accepts such credentials by computing A2
// with the URI the AUTH request was sent to (the relay's own To-Path URI,
// as written on the wire), checked the same way.
//
// # Users file
//
// [LoadUsers] reads a YAML file of this form:
//
//	users:
//	  - name: alice
//	    password: "secret"
//	  - name: bob
//	    ha1:
//	      MD5: "<32 hex>"        # md5(bob:realm:password)
//	      SHA-256: "<64 hex>"    # sha256(bob:realm:password)
//
// Each entry has a non-empty, unique name and either a password or at least
// one ha1 (not both). ha1 keys are algorithm names (MD5, SHA-256, case
// insensitive), values hex digests of the right length (32 or 64 hex
// digits) of "name:realm:password" for the relay's realm. Unknown keys are
// errors; errors name the file, the entry (index, name and line) and the
// problem.
//
// A client answers the first challenge it supports (RFC 7616 §3.7), SHA-256
// by default, and the first AUTH names no user to choose the offer by. A
// user with only an MD5 HA1 who answers SHA-256 gets ErrUserAlgorithm: the
// 401 then offers MD5 alone, with stale=true so that the client answers again
// without asking its user (RFC 7616 §3.3), and it is not a failed AUTH. Its
// nonce is marked as such an offer: answering it with SHA-256 again is
// ErrBadResponse. The same holds for a user with only a SHA-256 HA1 who
// answers MD5. This tells a client that the name exists and lacks an HA1 for
// the algorithm; users with a password, or an HA1 for every offered
// algorithm, stay indistinguishable from unknown ones.
package auth
