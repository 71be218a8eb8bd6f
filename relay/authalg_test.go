package relay_test

import (
	"crypto/md5"
	"encoding/hex"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
	"github.com/msrpscope/msrpscope/relay/auth"
)

// A user whose users file holds only an MD5 HA1 answers the first offer
// (SHA-256, RFC 7616 §3.7: the client takes the first it supports). The
// relay cannot check that answer: it challenges again with MD5 alone
// (stale=true, so the client retries) instead of failing the AUTH, and
// the retry succeeds. Nothing counts as a failed AUTH.
func TestAuthMD5OnlyUserAnsweringSHA256(t *testing.T) {
	sum := md5.Sum([]byte("dave:127.0.0.1:dave-pw"))
	tr := startRelay(t, func(c *relay.Config) {
		u := auth.NewUsers()
		if err := u.Add(auth.User{Name: "dave", HA1: map[auth.Algorithm]string{auth.MD5: hex.EncodeToString(sum[:])}}); err != nil {
			t.Fatal(err)
		}
		c.Users = u
		c.Limits.MaxAuthFailures = 1 // one counted failure would close the connection
	})
	ctx := ctxT(t)
	c, err := msrpclient.Dial(ctx, tr.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Auth(ctx, tr.uri, "dave", "dave-pw", 0); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if st := tr.Stats(); st.AuthFailed != 0 || st.AuthOK != 1 {
		t.Fatalf("AuthFailed %d, AuthOK %d; want 0 and 1", st.AuthFailed, st.AuthOK)
	}
}
