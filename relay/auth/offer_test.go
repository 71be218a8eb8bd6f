package auth

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// TestUserAlgorithmOffer plays AUTH exchanges as a client does: it answers
// the first challenge of each 401 whose algorithm it supports (RFC 7616
// §3.7) with a digest of its own (clientResponse), and the next 401 carries
// ChallengesAfter(err), as the relay sends it.
func TestUserAlgorithmOffer(t *testing.T) {
	type step struct {
		pass  string // the password the client answers with
		alg   string // "": the algorithm of the challenge taken; else answer with this one (ignoring algorithm=)
		want  error
		fails bool     // CountsAsFailure
		next  []string // algorithms of the next 401's challenges, in order (want != nil)
		stale bool     // whether they carry stale=true
	}
	both := []string{"SHA-256", "MD5"}
	tests := []struct {
		name       string
		offered    []Algorithm
		user       string
		clientAlgs []string // what the client supports; nil: MD5 and SHA-256
		steps      []step
	}{
		{name: "MD5-only user takes SHA-256 first, then the MD5 offer", user: "dave", steps: []step{
			{pass: "pw", want: ErrUserAlgorithm, next: []string{"MD5"}, stale: true},
			{pass: "pw"},
		}},
		{name: "MD5-only user, wrong password: found out at the MD5 offer", user: "dave", steps: []step{
			{pass: "nope", want: ErrUserAlgorithm, next: []string{"MD5"}, stale: true},
			{pass: "nope", want: ErrBadResponse, fails: true, next: both},
			{pass: "pw", want: ErrUserAlgorithm, next: []string{"MD5"}, stale: true},
			{pass: "pw"},
		}},
		{name: "client answering SHA-256 to the MD5 offer fails", user: "dave", steps: []step{
			{pass: "pw", want: ErrUserAlgorithm, next: []string{"MD5"}, stale: true},
			{pass: "pw", alg: "SHA-256", want: ErrBadResponse, fails: true, next: both},
		}},
		{name: "SHA-256-only user takes MD5 first, then the SHA-256 offer", offered: []Algorithm{MD5, SHA256}, user: "erin",
			steps: []step{
				{pass: "pw2", want: ErrUserAlgorithm, next: []string{"SHA-256"}, stale: true},
				{pass: "pw2"},
			}},
		{name: "MD5-only user, client without SHA-256", user: "dave", clientAlgs: []string{"MD5"}, steps: []step{
			{pass: "pw"},
		}},
		{name: "MD5-only user, only SHA-256 offered: nothing to offer", offered: []Algorithm{SHA256}, user: "dave", steps: []step{
			{pass: "pw", want: ErrBadResponse, fails: true, next: []string{"SHA-256"}},
		}},
		{name: "unknown user", user: "mallory", steps: []step{
			{pass: "pw", want: ErrUnknownUser, fails: true, next: both},
		}},
		{name: "password user, wrong password", user: "alice", steps: []step{
			{pass: "pw", want: ErrBadResponse, fails: true, next: both},
			{pass: "!secret"},
		}},
		{name: "user with both HA1s", user: "bob", steps: []step{{pass: "hunter2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAuth(t, func(c *Config) {
				c.Algorithms = tc.offered
				if err := c.Users.Add(User{Name: "erin", HA1: map[Algorithm]string{SHA256: h("SHA-256", "erin:"+testRealm+":pw2")}}); err != nil {
					t.Fatal(err)
				}
			})
			clientAlgs := tc.clientAlgs
			if clientAlgs == nil {
				clientAlgs = both
			}
			chs := a.Challenges(false) // the 401 to the AUTH without credentials
			for i, st := range tc.steps {
				ch := firstSupported(t, chs, clientAlgs)
				c := answer(t, ch, tc.user, st.pass, "00000001", st.alg)
				res, err := a.Verify([]byte(c.String()), "AUTH")
				checkErr(t, err, st.want)
				if got := CountsAsFailure(err); got != st.fails {
					t.Fatalf("step %d: CountsAsFailure(%v) = %v, want %v", i, err, got, st.fails)
				}
				if err == nil {
					if res.User != tc.user || string(res.Algorithm) != c.Algorithm {
						t.Fatalf("step %d: result %+v for %s with %s", i, res, tc.user, c.Algorithm)
					}
					if i != len(tc.steps)-1 {
						t.Fatalf("step %d succeeded, %d steps left", i, len(tc.steps)-1-i)
					}
					return
				}
				chs = a.ChallengesAfter(err)
				checkChallenges(t, chs, st.next, st.stale)
			}
		})
	}
}

// firstSupported returns the first challenge whose algorithm the client
// supports.
func firstSupported(t *testing.T, chs [][]byte, algs []string) []byte {
	t.Helper()
	for _, ch := range chs {
		d, err := msrp.ParseDigest(ch)
		if err != nil {
			t.Fatalf("challenge %q: %v", ch, err)
		}
		if alg, _ := d.Get("algorithm"); slices.Contains(algs, alg) {
			return ch
		}
	}
	t.Fatalf("no challenge of %v in %q", algs, chs)
	return nil
}

// checkChallenges checks that chs are one challenge per algorithm of algs,
// in order, with one nonce, stale=true exactly when stale.
func checkChallenges(t *testing.T, chs [][]byte, algs []string, stale bool) {
	t.Helper()
	if len(chs) != len(algs) {
		t.Fatalf("%d challenges %q, want algorithms %v", len(chs), chs, algs)
	}
	var nonce string
	for i, ch := range chs {
		d, err := msrp.ParseDigest(ch)
		if err != nil {
			t.Fatalf("challenge %q: %v", ch, err)
		}
		alg, _ := d.Get("algorithm")
		s, _ := d.Get("stale")
		n, _ := d.Get("nonce")
		if alg != algs[i] || (s == "true") != stale || i > 0 && n != nonce {
			t.Fatalf("challenge %d: %s; want algorithm=%s, stale %v, nonce %s", i, ch, algs[i], stale, nonce)
		}
		nonce = n
	}
}

// The error of an answer with an algorithm the user lacks names the user,
// the algorithm and the offer; it is not "wrong response".
func TestAlgorithmErrorText(t *testing.T) {
	a, _ := newTestAuth(t, nil)
	c := answer(t, challengeFor(t, a, SHA256, false), "dave", "pw", "00000001", "")
	_, err := a.Verify([]byte(c.String()), "AUTH")
	var ae *AlgorithmError
	if !errors.As(err, &ae) || ae.User != "dave" || ae.Used != SHA256 || !slices.Equal(ae.Offer, []Algorithm{MD5}) {
		t.Fatalf("err = %#v", err)
	}
	want := `auth: no credentials of the user for the algorithm: user "dave" answered with SHA-256, offering MD5`
	if err.Error() != want || strings.Contains(err.Error(), ErrBadResponse.Error()) {
		t.Fatalf("err text %q, want %q", err, want)
	}
	if CountsAsFailure(nil) {
		t.Fatal("CountsAsFailure(nil)")
	}
}
