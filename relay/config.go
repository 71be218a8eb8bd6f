package relay

import (
	"errors"
	"fmt"
	"github.com/msrpscope/msrpscope/tracer/event"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Config is everything a Relay needs. Zero values take the defaults of
// DefaultLimits, DefaultAuth and DefaultTraceCaptureBytes; docs/CONFIG.md
// lists every key.
type Config struct {
	Listen   []Listen `yaml:"listen"`
	URIs     []string `yaml:"uris"` // further URIs that name this relay (public names, aliases)
	Auth     Auth     `yaml:"auth"`
	Limits   Limits   `yaml:"limits"`
	Outbound Outbound `yaml:"outbound"`
	// TraceCaptureBytes bounds how much of each frame an Observer sees
	// in event.FrameInfo.Wire. Default DefaultTraceCaptureBytes.
	TraceCaptureBytes int `yaml:"trace_capture_bytes"`

	Users    *auth.Users    `yaml:"-"` // who may AUTH; from Auth.UsersFile when nil
	Logger   *slog.Logger   `yaml:"-"`
	Observer event.Observer `yaml:"-"`
	// LogRate bounds the log lines a peer can trigger, per kind of line
	// (relay/logs.go); zero fields take ratelog's defaults.
	LogRate ratelog.Config `yaml:"-"`
}

// Listen is one listening socket.
type Listen struct {
	Transport string `yaml:"transport"` // "msrp" (TCP) or "msrps" (TLS)
	Addr      string `yaml:"addr"`      // host:port; IPv6 as [::1]:2855
	// URI is what this listener is called in To-Path and Use-Path, e.g.
	// "msrps://relay.example.com:2856;tcp". Default: scheme://addr;tcp,
	// which needs a concrete (not unspecified) address.
	URI string `yaml:"uri"`
	// TLS (msrps only): server certificate and key files (PEM).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, is the CA file that client certificates are
	// verified against; ClientAuth is "none" (default), "request"
	// (verify if sent) or "require".
	ClientCA   string `yaml:"client_ca"`
	ClientAuth string `yaml:"client_auth"`
}

// Auth configures AUTH (RFC 4976 §5).
type Auth struct {
	Realm      string        `yaml:"realm"`       // default: host of the first listener URI
	UsersFile  string        `yaml:"users_file"`  // YAML users file (see relay/auth)
	Algorithms []string      `yaml:"algorithms"`  // offered, in order; default [SHA-256, MD5]
	Expires    int           `yaml:"expires"`     // seconds granted when AUTH has no Expires; default 1800
	MinExpires int           `yaml:"min_expires"` // shorter requests get 423 + Min-Expires; default 60
	MaxExpires int           `yaml:"max_expires"` // longer requests get 423 + Max-Expires; default 3600
	NonceTTL   time.Duration `yaml:"nonce_ttl"`   // default 30s
	// NonceSecret (hex, 32 bytes or more) is the HMAC key of nonces and
	// opaque; default: random per start. Nonces are bound to this relay's
	// URIs and to this start whatever the secret (relay/auth).
	NonceSecret string `yaml:"nonce_secret"`
}

// Limits bound what one peer can make the relay do.
type Limits struct {
	HeaderTimeout       time.Duration `yaml:"header_timeout"`         // start line + headers of one frame, from its first byte; default 10s
	BodyTimeout         time.Duration `yaml:"body_timeout"`           // a body read that makes no progress; default 30s
	BodyMinRate         int           `yaml:"body_min_rate"`          // bytes/s floor of a chunk's body after body_timeout: total deadline body_timeout + bytes/rate; default 1024
	IdleTimeout         time.Duration `yaml:"idle_timeout"`           // no frame at all; default 1h (RFC 4976 §6.5)
	FirstRequestTimeout time.Duration `yaml:"first_request_timeout"`  // total time of a new inbound connection until a request of it succeeded; default 30s (RFC 4976 §6.1)
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`  // default 10s
	SendTimeout         time.Duration `yaml:"send_timeout"`           // a write that makes no progress (slow reader); default 10s
	ConnectTimeout      time.Duration `yaml:"connect_timeout"`        // outbound TCP connect; default 5s
	TransactionTimeout  time.Duration `yaml:"transaction_timeout"`    // response to a forwarded request; default 30s (RFC 4976 §6.4.1)
	MaxHeaderBytes      int           `yaml:"max_header_bytes"`       // start line + headers; default 16384
	MaxHeaders          int           `yaml:"max_headers"`            // default 64
	MaxConnections      int           `yaml:"max_connections"`        // default 10000
	MaxConnectionsPerIP int           `yaml:"max_connections_per_ip"` // default 256
	MaxSessions         int           `yaml:"max_sessions"`           // default 100000
	MaxSessionsPerUser  int           `yaml:"max_sessions_per_user"`  // default 64
	WriteQueue          int           `yaml:"write_queue"`            // queued responses/REPORTs per connection; full → back-pressure (see docs/CONFIG.md); default 1024
	MaxAuthFailures     int           `yaml:"max_auth_failures"`      // failed AUTHs without success before close (RFC 4976 §6.3); default 5
	ShutdownGrace       time.Duration `yaml:"shutdown_grace"`         // graceful shutdown: frames in flight and awaited responses get this long; default 10s
}

// DefaultLimits returns the limits used for zero fields: the one place
// where each default limit is set (docs/CONFIG.md and cmd/msrpscope's
// default.yaml state the same values).
func DefaultLimits() Limits { return defaultLimits }

var defaultLimits = Limits{
	HeaderTimeout:       10 * time.Second,
	BodyTimeout:         30 * time.Second,
	BodyMinRate:         1024,
	IdleTimeout:         time.Hour,
	FirstRequestTimeout: 30 * time.Second,
	TLSHandshakeTimeout: 10 * time.Second,
	SendTimeout:         10 * time.Second,
	ConnectTimeout:      5 * time.Second,
	TransactionTimeout:  30 * time.Second,
	MaxHeaderBytes:      msrp.DefaultMaxHeaderBytes,
	MaxHeaders:          msrp.DefaultMaxHeaders,
	MaxConnections:      10000,
	MaxConnectionsPerIP: 256,
	MaxSessions:         100000,
	MaxSessionsPerUser:  64,
	WriteQueue:          1024,
	MaxAuthFailures:     5,
	ShutdownGrace:       10 * time.Second,
}

// DefaultTraceCaptureBytes is Config.TraceCaptureBytes when zero.
const DefaultTraceCaptureBytes = 16 << 10

// DefaultAuth returns the AUTH settings used for zero fields (Realm
// defaults to the host of the first listener URI; Algorithms and NonceTTL
// to relay/auth's).
func DefaultAuth() Auth {
	return Auth{Expires: 1800, MinExpires: 60, MaxExpires: 3600}
}

// Outbound configures connections the relay opens to next hops.
type Outbound struct {
	CAFile             string `yaml:"ca_file"`              // verify msrps peers against this CA (PEM); default: system roots
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // do not verify msrps peers (tests only)
	Cert               string `yaml:"cert"`                 // client certificate for mutual TLS towards relays
	Key                string `yaml:"key"`
	// DNS is "host:port" of the DNS server next-hop names are resolved
	// with (SRV, A/AAAA); default: the system resolver.
	DNS string `yaml:"dns"`
}

func orDur(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

func orInt(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func (l Limits) withDefaults() Limits {
	d := defaultLimits
	l.HeaderTimeout = orDur(l.HeaderTimeout, d.HeaderTimeout)
	l.BodyTimeout = orDur(l.BodyTimeout, d.BodyTimeout)
	l.BodyMinRate = orInt(l.BodyMinRate, d.BodyMinRate)
	l.IdleTimeout = orDur(l.IdleTimeout, d.IdleTimeout)
	l.FirstRequestTimeout = orDur(l.FirstRequestTimeout, d.FirstRequestTimeout)
	l.TLSHandshakeTimeout = orDur(l.TLSHandshakeTimeout, d.TLSHandshakeTimeout)
	l.SendTimeout = orDur(l.SendTimeout, d.SendTimeout)
	l.ConnectTimeout = orDur(l.ConnectTimeout, d.ConnectTimeout)
	l.TransactionTimeout = orDur(l.TransactionTimeout, d.TransactionTimeout)
	l.MaxHeaderBytes = orInt(l.MaxHeaderBytes, d.MaxHeaderBytes)
	l.MaxHeaders = orInt(l.MaxHeaders, d.MaxHeaders)
	l.MaxConnections = orInt(l.MaxConnections, d.MaxConnections)
	l.MaxConnectionsPerIP = orInt(l.MaxConnectionsPerIP, d.MaxConnectionsPerIP)
	l.MaxSessions = orInt(l.MaxSessions, d.MaxSessions)
	l.MaxSessionsPerUser = orInt(l.MaxSessionsPerUser, d.MaxSessionsPerUser)
	l.WriteQueue = orInt(l.WriteQueue, d.WriteQueue)
	l.MaxAuthFailures = orInt(l.MaxAuthFailures, d.MaxAuthFailures)
	l.ShutdownGrace = orDur(l.ShutdownGrace, d.ShutdownGrace)
	return l
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("relay: bad configuration")

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

// listenURI returns the URI a listener is known by.
func (l Listen) listenURI() (msrp.URI, error) {
	scheme := strings.ToLower(l.Transport)
	if scheme != "msrp" && scheme != "msrps" {
		return msrp.URI{}, cfgErr("listen %q: transport must be msrp or msrps, not %q", l.Addr, l.Transport)
	}
	if l.URI != "" {
		u, err := msrp.ParseURI(l.URI)
		if err != nil {
			return u, cfgErr("listen %q: uri: %v", l.Addr, err)
		}
		if u.Secure != (scheme == "msrps") {
			return u, cfgErr("listen %q: uri %q has the wrong scheme for transport %s", l.Addr, l.URI, scheme)
		}
		if u.SessionID != "" {
			return u, cfgErr("listen %q: uri %q must not have a session-id", l.Addr, l.URI)
		}
		return u, nil
	}
	host, port, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return msrp.URI{}, cfgErr("listen %q: %v", l.Addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return msrp.URI{}, cfgErr("listen %q: an unspecified address needs an explicit uri (what peers use to reach this relay)", l.Addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 { // 0: any free port, named once bound
		return msrp.URI{}, cfgErr("listen %q: bad port", l.Addr)
	}
	return msrp.URI{Secure: scheme == "msrps", Host: host, Port: p, Transport: "tcp"}, nil
}
