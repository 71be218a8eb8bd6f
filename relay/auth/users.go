package auth

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Algorithm is a digest algorithm as written in the algorithm= parameter:
// "MD5" or "SHA-256". Names compare case-insensitively; the constants are
// the canonical spellings.
type Algorithm string

// The supported algorithms.
const (
	MD5    Algorithm = "MD5"
	SHA256 Algorithm = "SHA-256"
)

// canonical returns the canonical spelling of a supported algorithm name
// and whether it is supported.
func canonical(name string) (Algorithm, bool) {
	switch {
	case strings.EqualFold(name, string(MD5)):
		return MD5, true
	case strings.EqualFold(name, string(SHA256)):
		return SHA256, true
	}
	return "", false
}

// hexLen is the length of a hex digest of alg.
func hexLen(alg Algorithm) int {
	if alg == SHA256 {
		return 64
	}
	return 32
}

// User is one account. Either Password is set, or HA1 holds, per
// algorithm, the lowercase hex H(name ":" realm ":" password) for the
// relay's realm (used when Password is empty).
type User struct {
	Name     string
	Password string
	HA1      map[Algorithm]string
}

// Users is a set of users keyed by name. It is safe for concurrent use.
type Users struct {
	mu sync.RWMutex
	m  map[string]User
}

// NewUsers returns an empty set.
func NewUsers() *Users { return &Users{m: make(map[string]User)} }

// Add validates user and adds it: the name must be non-empty, free of
// control characters and not yet present; exactly one of Password and HA1
// must be given; HA1 keys must be supported algorithms (any case) and
// values hex digests of the right length. The stored copy has canonical
// algorithm names and lowercase hex.
func (u *Users) Add(user User) error {
	if user.Name == "" {
		return errors.New("empty name")
	}
	if hasCTL(user.Name) {
		return fmt.Errorf("name %q has control characters", user.Name)
	}
	if user.Password != "" && len(user.HA1) > 0 {
		return fmt.Errorf("user %q: both password and ha1 given", user.Name)
	}
	if user.Password == "" && len(user.HA1) == 0 {
		return fmt.Errorf("user %q: neither password nor ha1 given", user.Name)
	}
	var ha1 map[Algorithm]string
	if len(user.HA1) > 0 {
		ha1 = make(map[Algorithm]string, len(user.HA1))
		for k, v := range user.HA1 {
			alg, ok := canonical(string(k))
			if !ok {
				return fmt.Errorf("user %q: ha1 algorithm %q not supported (want MD5 or SHA-256)", user.Name, k)
			}
			if _, dup := ha1[alg]; dup {
				return fmt.Errorf("user %q: ha1 algorithm %s given twice", user.Name, alg)
			}
			if len(v) != hexLen(alg) || !isHex(v) {
				return fmt.Errorf("user %q: ha1 %s must be %d hex digits", user.Name, alg, hexLen(alg))
			}
			ha1[alg] = strings.ToLower(v)
		}
	}
	user.HA1 = ha1
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[string]User)
	}
	if _, dup := u.m[user.Name]; dup {
		return fmt.Errorf("duplicate user %q", user.Name)
	}
	u.m[user.Name] = user
	return nil
}

// Lookup returns the user called name (case-sensitive) and whether it
// exists. The HA1 map of the result must not be modified.
func (u *Users) Lookup(name string) (User, bool) {
	u.mu.RLock()
	user, ok := u.m[name]
	u.mu.RUnlock()
	return user, ok
}

// Replace makes u hold exactly the users of from (a reloaded users file):
// users not in from can no longer authenticate; sessions already granted
// are not affected.
func (u *Users) Replace(from *Users) {
	from.mu.RLock()
	m := maps.Clone(from.m)
	from.mu.RUnlock()
	u.mu.Lock()
	u.m = m
	u.mu.Unlock()
}

// Len returns the number of users.
func (u *Users) Len() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.m)
}

// usersFile is the YAML users file.
type usersFile struct {
	Users []userEntry `yaml:"users"`
}

type userEntry struct {
	Name     string            `yaml:"name"`
	Password string            `yaml:"password"`
	HA1      map[string]string `yaml:"ha1"`
}

// LoadUsers reads a YAML users file (format in the package doc). Errors
// name the file and, for a bad entry, its index, name and line.
func LoadUsers(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: users file: %w", err)
	}
	users, err := parseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("auth: users file %s: %w", path, err)
	}
	return users, nil
}

// ParseUsers parses a YAML users document (format in the package doc).
func ParseUsers(yml []byte) (*Users, error) {
	users, err := parseUsers(yml)
	if err != nil {
		return nil, fmt.Errorf("auth: users: %w", err)
	}
	return users, nil
}

func parseUsers(yml []byte) (*Users, error) {
	file, err := parser.ParseBytes(yml, 0)
	if err != nil {
		return nil, errors.New(strings.TrimRight(yaml.FormatError(err, false, true), "\n"))
	}
	var docs []*ast.DocumentNode
	for _, d := range file.Docs {
		if d.Body != nil {
			docs = append(docs, d)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, errors.New("empty document")
	case len(docs) > 1:
		return nil, errors.New("more than one YAML document")
	}
	var f usersFile
	if err := yaml.NodeToValue(docs[0].Body, &f, yaml.Strict()); err != nil {
		return nil, errors.New(strings.TrimRight(yaml.FormatError(err, false, true), "\n"))
	}
	lines := entryLines(docs[0].Body)
	users := NewUsers()
	for i, e := range f.Users {
		where := fmt.Sprintf("users[%d]", i)
		if e.Name != "" {
			where += fmt.Sprintf(" %q", e.Name)
		}
		if i < len(lines) {
			where += fmt.Sprintf(" (line %d)", lines[i])
		}
		user := User{Name: e.Name, Password: e.Password}
		if len(e.HA1) > 0 {
			user.HA1 = make(map[Algorithm]string, len(e.HA1))
			for k, v := range e.HA1 {
				user.HA1[Algorithm(k)] = v
			}
		}
		if err := users.Add(user); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return users, nil
}

// entryLines returns the line of each item of the top-level "users"
// sequence, for error messages; nil when it cannot tell.
func entryLines(root ast.Node) []int {
	m, ok := root.(*ast.MappingNode)
	if !ok {
		return nil
	}
	for _, kv := range m.Values {
		if kv.Key.GetToken().Value != "users" {
			continue
		}
		seq, ok := kv.Value.(*ast.SequenceNode)
		if !ok {
			return nil
		}
		var lines []int
		for _, item := range seq.Values {
			if tk := item.GetToken(); tk != nil && tk.Position != nil {
				lines = append(lines, tk.Position.Line)
			}
		}
		return lines
	}
	return nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
