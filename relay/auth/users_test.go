package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestParseUsersGood(t *testing.T) {
	md5hex := h("MD5", "bob:"+testRealm+":hunter2")
	shahex := h("SHA-256", "bob:"+testRealm+":hunter2")
	yml := `# relay users
users:
  - name: alice
    password: "!secret"
  - name: bob
    ha1:
      MD5: "` + strings.ToUpper(md5hex) + `"
      sha-256: "` + shahex + `"
  - name: "dave:x"
    ha1: {MD5: "` + md5hex + `"}
`
	u, err := ParseUsers([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 3 {
		t.Fatalf("Len %d", u.Len())
	}
	if a, ok := u.Lookup("alice"); !ok || a.Password != "!secret" || a.HA1 != nil {
		t.Errorf("alice %+v", a)
	}
	b, ok := u.Lookup("bob")
	if !ok || b.Password != "" || b.HA1[MD5] != md5hex || b.HA1[SHA256] != shahex || len(b.HA1) != 2 {
		t.Errorf("bob %+v", b)
	}
	if _, ok := u.Lookup("Bob"); ok {
		t.Error("lookup is case-insensitive")
	}
	// The loaded users authenticate.
	a, err := New(Config{Realm: testRealm, URIs: testURIs(t), Users: u, Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []Algorithm{MD5, SHA256} {
		c := answer(t, challengeFor(t, a, alg, false), "bob", "hunter2", "00000001", "")
		if _, err := a.Verify([]byte(c.String()), "AUTH"); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	if u, err := ParseUsers([]byte("users: []\n")); err != nil || u.Len() != 0 {
		t.Errorf("empty list: %v", err)
	}
}

func TestParseUsersBad(t *testing.T) {
	md5hex := h("MD5", "x")
	for _, tc := range []struct {
		name, yml string
		want      []string // substrings of the error
	}{
		{"duplicate name", "users:\n  - name: a\n    password: x\n  - name: a\n    password: y\n", []string{`users[1] "a" (line 4)`, "duplicate"}},
		{"no credentials", "users:\n  - name: a\n", []string{`users[0] "a" (line 2)`, "neither password nor ha1"}},
		{"empty ha1", "users:\n  - name: a\n    ha1: {}\n", []string{"neither password nor ha1"}},
		{"both", "users:\n  - name: a\n    password: x\n    ha1: {MD5: " + md5hex + "}\n", []string{"both password and ha1"}},
		{"no name", "users:\n  - password: x\n", []string{"users[0] (line 2)", "empty name"}},
		{"bad hex", "users:\n  - name: a\n    ha1: {MD5: " + strings.Repeat("g", 32) + "}\n", []string{`users[0] "a"`, "MD5 must be 32 hex digits"}},
		{"short hex", "users:\n  - name: a\n    ha1: {MD5: abc}\n", []string{"32 hex digits"}},
		{"md5 length for sha", "users:\n  - name: a\n    ha1: {SHA-256: " + md5hex + "}\n", []string{"SHA-256 must be 64 hex digits"}},
		{"unknown algorithm", "users:\n  - name: a\n    ha1: {SHA-1: " + md5hex + "}\n", []string{`"SHA-1" not supported`}},
		{"algorithm twice", "users:\n  - name: a\n    ha1: {MD5: " + md5hex + ", md5: " + md5hex + "}\n", []string{"given twice"}},
		{"duplicate yaml key", "users:\n  - name: a\n    name: b\n    password: x\n", []string{"already"}},
		{"unknown key", "users:\n  - name: a\n    pasword: x\n", []string{"pasword"}},
		{"unknown top key", "user:\n  - name: a\n", []string{"user"}},
		{"not a list", "users: alice\n", []string{"[1:8]", "sequence"}},
		{"empty", "", []string{"empty document"}},
		{"two documents", "users: []\n---\nusers: []\n", []string{"more than one"}},
		{"control char name", "users:\n  - name: \"a\\nb\"\n    password: x\n", []string{"control"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUsers([]byte(tc.yml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadUsers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(good, []byte("users:\n  - name: alice\n    password: s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUsers(good)
	if err != nil || u.Len() != 1 {
		t.Fatalf("LoadUsers: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("users:\n  - name: alice\n  - name: alice\n    password: s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadUsers(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `users[0] "alice" (line 2)`) {
		t.Errorf("error %v does not name the file and entry", err)
	}
	_, err = LoadUsers(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestUsersAdd(t *testing.T) {
	u := NewUsers()
	for _, bad := range []User{
		{},
		{Name: "a"},
		{Name: "a\x00", Password: "x"},
		{Name: "a", Password: "x", HA1: map[Algorithm]string{MD5: h("MD5", "")}},
		{Name: "a", HA1: map[Algorithm]string{"MD5-sess": h("MD5", "")}},
	} {
		if err := u.Add(bad); err == nil {
			t.Errorf("Add(%+v) accepted", bad)
		}
	}
	var zero Users // the zero value works too
	if err := zero.Add(User{Name: "z", Password: "p"}); err != nil || zero.Len() != 1 {
		t.Errorf("zero Users: %v", err)
	}
	// Concurrent use.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				name := string(rune('a'+i)) + strings.Repeat("x", j)
				if err := u.Add(User{Name: name, Password: "p"}); err != nil {
					t.Error(err)
				}
				if _, ok := u.Lookup(name); !ok {
					t.Error("lost", name)
				}
			}
		}()
	}
	wg.Wait()
	if u.Len() != 400 {
		t.Errorf("Len %d", u.Len())
	}
}
