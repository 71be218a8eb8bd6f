package auth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// authOutcome is what the responder saw of one AUTH with credentials.
type authOutcome struct {
	err   error
	fails bool // CountsAsFailure
}

// serveAuth answers AUTH requests on ln's first connection the way the
// relay answers them (RFC 4976 §5.1): 401 with Challenges(false) without
// credentials; 200 with Use-Path and Authentication-Info, 400 for
// ErrMalformed, else 401 with ChallengesAfter(err). It reports each
// verification on out and returns when the client closes.
func serveAuth(ln net.Listener, a *Authenticator, relayURI string, out chan<- authOutcome) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	r := msrp.NewReader(bufio.NewReader(conn), msrp.Limits{})
	w := msrp.NewWriter(conn)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return nil // the client closed
		}
		if string(f.Method) != "AUTH" {
			return fmt.Errorf("unexpected %s", f.Method)
		}
		var chs [][]byte
		code, comment := 401, "Unauthorized"
		var res Result
		if authz := f.Get(msrp.HdrAuthorization); authz == nil {
			chs = a.Challenges(false)
		} else {
			res, err = a.VerifyWithURI(authz, "AUTH", relayURI)
			out <- authOutcome{err: err, fails: CountsAsFailure(err)}
			switch {
			case err == nil:
				code, comment = 200, "OK"
			case errors.Is(err, ErrMalformed):
				code, comment = 400, "Bad credentials"
			default:
				chs = a.ChallengesAfter(err)
			}
		}
		if err := w.StartResponse(f.TransactID, code, comment); err != nil {
			return err
		}
		w.Header(msrp.HdrToPath, f.Get(msrp.HdrFromPath))
		w.HeaderString(msrp.HdrFromPath, relayURI)
		for _, ch := range chs {
			w.Header(msrp.HdrWWWAuthenticate, ch)
		}
		if code == 200 {
			w.HeaderString(msrp.HdrUsePath, relayURI)
			w.Header(msrp.HdrAuthenticationInf, res.AuthInfo)
		}
		if err := w.End(msrp.FlagEnd); err != nil {
			return err
		}
	}
}

// A real client (internal/msrpclient: the first supported challenge, one
// retry on stale=true, rspauth checked) authenticates as a user with only
// an MD5 HA1 over loopback, with no AUTH counted as failed; with a wrong
// password it fails once, counted.
func TestMsrpclientMD5OnlyUser(t *testing.T) {
	for _, tc := range []struct {
		name, pass string
		want       []error // the verification outcomes, in order
		wantOK     bool
		wantFails  int // verifications that count as failed AUTHs
	}{
		{"right password", "pw", []error{ErrUserAlgorithm, nil}, true, 0},
		{"wrong password", "nope", []error{ErrUserAlgorithm, ErrBadResponse}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			relayURI := fmt.Sprintf("msrp://127.0.0.1:%d;tcp", ln.Addr().(*net.TCPAddr).Port)
			a, _ := newTestAuth(t, func(c *Config) { c.URIs = testURIs(t, relayURI) })
			out := make(chan authOutcome, 16)
			served := make(chan error, 1)
			go func() { served <- serveAuth(ln, a, relayURI, out) }()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := msrpclient.Dial(ctx, ln.Addr().String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			use, _, err := c.Auth(ctx, relayURI, "dave", tc.pass, 0)
			c.Close()
			if err := <-served; err != nil {
				t.Fatalf("responder: %v", err)
			}
			close(out)
			if tc.wantOK != (err == nil) || tc.wantOK && use != relayURI {
				t.Fatalf("Auth = %q, %v; want success %v", use, err, tc.wantOK)
			}
			var got []error
			fails := 0
			for o := range out {
				got = append(got, o.err)
				if o.fails {
					fails++
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("verifications %v, want %v", got, tc.want)
			}
			for i := range got {
				if tc.want[i] == nil && got[i] != nil || tc.want[i] != nil && !errors.Is(got[i], tc.want[i]) {
					t.Fatalf("verification %d: %v, want %v", i, got[i], tc.want[i])
				}
			}
			if fails != tc.wantFails {
				t.Fatalf("%d verifications counted as failures, want %d", fails, tc.wantFails)
			}
		})
	}
}
