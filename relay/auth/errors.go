package auth

import "errors"

// Errors of [Authenticator.Verify]. They are returned wrapped with context;
// test them with errors.Is. The doc comment of each names the MSRP response
// the relay should send to the AUTH request. The error text is for logs (it
// may name the user); never send it to the client.
var (
	// ErrMalformed: the credentials cannot be used: the value does not
	// parse as "Digest" params, or username, realm, nonce, uri (unless
	// supplied by VerifyWithURI), response, or (with qop) cnonce or nc is
	// missing or empty, nc is not 8 hex digits or is zero, or userhash=true.
	// Send 400 Bad Request.
	ErrMalformed = errors.New("auth: malformed credentials")
	// ErrRealm: the realm is not ours. Send 401 Unauthorized with new
	// Challenges(false).
	ErrRealm = errors.New("auth: realm not ours")
	// ErrAlgorithm: the algorithm is not offered (an absent algorithm means
	// MD5, RFC 7616 §3.4). Send 401 Unauthorized with new Challenges(false).
	ErrAlgorithm = errors.New("auth: algorithm not offered")
	// ErrQop: qop is missing or is not "auth" (this relay requires
	// qop=auth). Send 401 Unauthorized with new Challenges(false).
	ErrQop = errors.New("auth: qop not auth")
	// ErrNonce: the nonce (or the opaque) was not made by us: bad encoding,
	// bad length or bad MAC (also: made with another secret, e.g. before a
	// restart without a fixed secret). Send 401 Unauthorized with new
	// Challenges(false).
	ErrNonce = errors.New("auth: nonce not ours")
	// ErrStale: the nonce is ours and the response correct, but the nonce is
	// older than NonceTTL (or its nonce-count entry was evicted from the
	// bounded table, or its issue time is implausibly far in the future).
	// Send 401 Unauthorized with new Challenges(true) (stale=true).
	ErrStale = errors.New("auth: stale nonce")
	// ErrReplay: the nonce-count is not greater than the highest already
	// accepted for this nonce. Send 401 Unauthorized with new
	// Challenges(false).
	ErrReplay = errors.New("auth: nonce-count replayed")
	// ErrUnknownUser: no such user. Send 401 Unauthorized with new
	// Challenges(false) — the same answer as ErrBadResponse, so that a
	// client cannot tell the two apart (nor by timing: a dummy hash is
	// computed and compared for unknown users).
	ErrUnknownUser = errors.New("auth: unknown user")
	// ErrBadResponse: the response does not match (wrong password, or a
	// user with no credentials for the algorithm used). Send 401
	// Unauthorized with new Challenges(false).
	ErrBadResponse = errors.New("auth: wrong response")
)
