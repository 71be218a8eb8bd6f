// Package admin is the admin HTTP API (tracing switches, rules, sinks,
// sessions, connections, reload, dynamic traces, health, /metrics) and the web view under /ui/.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// DefaultAddr is where the admin API listens unless configured: loopback,
// so that it needs no token.
const DefaultAddr = "127.0.0.1:8055"

// Config configures the admin server. cmd applies DefaultAddr; an empty
// Addr means the admin API is off and New is not called.
type Config struct {
	Addr        string
	Token       string // bearer token; at most one of Token and TokenFile
	TokenFile   string // a file holding the token (surrounding white space trimmed)
	MetricsAuth bool   // /metrics requires the token too
	TLSCert     string // PEM files; both or neither
	TLSKey      string
}

// Deps are what the routes act on. A nil one makes its routes answer 503.
type Deps struct {
	Tracing   Tracing
	Traces    Traces
	Relay     Relay
	Reloader  Reloader
	Readiness Readiness
	Metrics   http.Handler
	Flows     Flows // the web view's message flows; nil: the session page says none is configured
	Log       *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	cfg   Config
	deps  Deps
	token *[sha256.Size]byte // nil: no token needed
	ln    net.Listener
	srv   *http.Server
	h     http.Handler
}

// New checks cfg, reads the token and binds the listener. It refuses a
// non-loopback address without a token.
func New(cfg Config, deps Deps) (*Server, error) {
	if cfg.Addr == "" {
		return nil, errors.New("admin: no address (an empty admin.addr disables the admin API)")
	}
	tok, err := loadToken(cfg)
	if err != nil {
		return nil, err
	}
	if tok == "" && !loopback(cfg.Addr) {
		return nil, fmt.Errorf("admin: %s is not a loopback address: set admin.token or admin.token_file, or listen on 127.0.0.1", cfg.Addr)
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, deps: deps}
	if tok != "" {
		h := sha256.Sum256([]byte(tok))
		s.token = &h
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("admin: TLS needs both admin.tls_cert and admin.tls_key")
		}
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("admin: TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.h = s.routes()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(deps.Log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handler is the server's handler, token check included.
func (s *Server) Handler() http.Handler { return s.h }

// Serve serves until Shutdown is called or ctx ends (then it shuts down,
// giving requests 5s); it returns nil after a shutdown.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
	})
	defer stop()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admin: serve: %w", err)
}

// Shutdown stops accepting, waits for running requests until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

func loadToken(cfg Config) (string, error) {
	switch {
	case cfg.Token != "" && cfg.TokenFile != "":
		return "", errors.New("admin: set admin.token or admin.token_file, not both")
	case cfg.TokenFile != "":
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin: token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("admin: token file %s is empty", cfg.TokenFile)
		}
		return t, nil
	}
	return cfg.Token, nil
}

// loopback reports whether addr's host is a loopback IP or "localhost"; an
// empty host listens everywhere and is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// authorized checks the bearer token in constant time (over digests, so
// the length does not leak either).
func (s *Server) authorized(r *http.Request) bool {
	if s.token == nil {
		return true
	}
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], s.token[:]) == 1
}
