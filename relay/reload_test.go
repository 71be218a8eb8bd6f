package relay_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay"
)

// Reload replaces the users file and the limits while sessions go on:
// a removed user can no longer AUTH, a new one can, a session granted
// before stays usable, a lowered per-user session bound applies to the
// next AUTH, and a key that needs a restart is named, not applied.
func TestReloadUsersAndLimits(t *testing.T) {
	usersFile := filepath.Join(t.TempDir(), "users.yaml")
	writeUsers := func(body string) {
		t.Helper()
		if err := os.WriteFile(usersFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("users:\n  - {name: alice, password: alice-pw}\n  - {name: bob, password: bob-pw}\n")
	var cfg relay.Config
	tr := startRelay(t, func(c *relay.Config) {
		c.Users = nil
		c.Auth.UsersFile = usersFile
		cfg = *c
	})
	a, useA := client(t, tr, "alice", msrpclient.Options{})
	b, useB := client(t, tr, "bob", msrpclient.Options{})

	writeUsers("users:\n  - {name: bob, password: bob-pw}\n  - {name: zed, password: zed-pw}\n")
	next := cfg
	next.Limits.MaxSessionsPerUser = 1
	next.Listen = []relay.Listen{{Transport: "msrp", Addr: "127.0.0.1:1"}}
	needRestart, err := tr.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(needRestart, []string{"listen"}) {
		t.Errorf("needRestart %q, want [listen]", needRestart)
	}
	ctx := ctxT(t)
	auth := func(user, pw string) error {
		c, err := msrpclient.Dial(ctx, tr.addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_, _, err = c.Auth(ctx, tr.uri, user, pw, 0)
		return err
	}
	if err := auth("alice", "alice-pw"); err == nil || statusCode(t, err) != 401 {
		t.Errorf("alice after her removal: %v, want 401", err)
	}
	if err := auth("zed", "zed-pw"); err != nil {
		t.Errorf("zed after his addition: %v", err)
	}
	if err := auth("bob", "bob-pw"); err == nil || statusCode(t, err) != 403 {
		t.Errorf("bob's second session with max_sessions_per_user 1: %v, want 403", err)
	}
	// Sessions granted before the reload go on.
	if _, err := a.Send(ctx, []string{useA, useB, b.LocalURI()}, msrpclient.Message{Body: []byte("still here"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("SEND on a session granted before the reload: %v", err)
	}
	if got := receive(t, b, "SEND"); string(got.Body) != "still here" {
		t.Fatalf("got %q", got.Body)
	}

	// A users file that does not parse changes nothing: neither the users
	// nor the limits that came with it.
	writeUsers("users: [{name: alice, password: alice-pw}\n")
	broken := next
	broken.Limits.MaxSessionsPerUser = 5
	if _, err := tr.Reload(broken); err == nil {
		t.Fatal("a broken users file was accepted")
	}
	if err := auth("alice", "alice-pw"); err == nil || statusCode(t, err) != 401 {
		t.Errorf("alice after a refused reload: %v, want 401", err)
	}
	if err := auth("bob", "bob-pw"); err == nil || statusCode(t, err) != 403 {
		t.Errorf("bob after a refused reload: %v, want 403", err)
	}
}
