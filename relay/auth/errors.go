package auth

import (
	"errors"
	"fmt"
	"strings"
)

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
	// ErrURI: the digest uri (or, when the credentials have none, the
	// request URI given to VerifyWithURI) does not name this relay
	// (Config.URIs; RFC 4976 §5). Send 401 Unauthorized with new
	// Challenges(false).
	ErrURI = errors.New("auth: digest uri does not name this relay")
	// ErrAlgorithm: the algorithm is not offered (an absent algorithm means
	// MD5, RFC 7616 §3.4). Send 401 Unauthorized with new Challenges(false).
	ErrAlgorithm = errors.New("auth: algorithm not offered")
	// ErrQop: qop is missing or is not "auth" (this relay requires
	// qop=auth). Send 401 Unauthorized with new Challenges(false).
	ErrQop = errors.New("auth: qop not auth")
	// ErrNonce: the nonce (or the opaque) was not made by us: bad encoding
	// or bad length, or a bad MAC with a response that does not match
	// either (a bad MAC with a correct response is ErrStale). Send 401
	// Unauthorized with new Challenges(false).
	ErrNonce = errors.New("auth: nonce not ours")
	// ErrStale: the response is correct, but the nonce is older than
	// NonceTTL (or its nonce-count entry was evicted from the bounded
	// table, or its issue time is implausibly far in the future), or it
	// was made by an earlier run of this relay or by another relay.
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
	// user with no credentials for the algorithm used who was offered the
	// ones they have already, see ErrUserAlgorithm). Send 401 Unauthorized
	// with new Challenges(false).
	ErrBadResponse = errors.New("auth: wrong response")
	// ErrUserAlgorithm: the user exists but has no credentials for the
	// algorithm of the answer, only for other offered ones (a user with
	// only an MD5 HA1 answering the SHA-256 challenge, which a client takes
	// first, RFC 7616 §3.7). The answer cannot be checked and says nothing
	// against the client: send 401 Unauthorized with
	// ChallengesAfter(err), the user's algorithms only, stale=true, and do
	// not count it as a failed AUTH (CountsAsFailure is false). The error
	// is an *AlgorithmError.
	ErrUserAlgorithm = errors.New("auth: no credentials of the user for the algorithm")
)

// AlgorithmError is the ErrUserAlgorithm error.
type AlgorithmError struct {
	User  string      // the user name of the credentials
	Used  Algorithm   // the algorithm of the answer
	Offer []Algorithm // the offered algorithms the user has credentials for, in preference order
}

func (e *AlgorithmError) Error() string {
	offer := make([]string, len(e.Offer))
	for i, alg := range e.Offer {
		offer[i] = string(alg)
	}
	return fmt.Sprintf("%v: user %q answered with %s, offering %s", ErrUserAlgorithm, e.User, e.Used, strings.Join(offer, ", "))
}

func (e *AlgorithmError) Unwrap() error { return ErrUserAlgorithm }
