package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/msrpscope/msrpscope/tracer/event"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// listener is one bound listening socket.
type listener struct {
	cfg    Listen
	ln     net.Listener
	uri    msrp.URI
	tlsCfg *tls.Config // nil for msrp
}

// listen checks lc and, when bind is set, binds its socket.
func (r *Relay) listen(lc Listen, bind bool) (*listener, error) {
	l := &listener{cfg: lc}
	if strings.EqualFold(lc.Transport, "msrps") {
		if lc.Cert == "" || lc.Key == "" {
			return nil, cfgErr("listen %q: msrps needs cert and key", lc.Addr)
		}
		cert, err := tls.LoadX509KeyPair(lc.Cert, lc.Key)
		if err != nil {
			return nil, cfgErr("listen %q: %v", lc.Addr, err)
		}
		l.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		switch strings.ToLower(lc.ClientAuth) {
		case "", "none":
		case "request", "require":
			if lc.ClientCA == "" {
				return nil, cfgErr("listen %q: client_auth %s needs client_ca", lc.Addr, lc.ClientAuth)
			}
			pool, err := loadCAs(lc.ClientCA)
			if err != nil {
				return nil, cfgErr("listen %q: %v", lc.Addr, err)
			}
			l.tlsCfg.ClientCAs = pool
			l.tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
			if strings.EqualFold(lc.ClientAuth, "require") {
				l.tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
		default:
			return nil, cfgErr("listen %q: client_auth must be none, request or require", lc.Addr)
		}
	} else if lc.Cert != "" || lc.ClientCA != "" {
		return nil, cfgErr("listen %q: cert/client_ca only apply to msrps", lc.Addr)
	}
	// Check the transport and URI before binding.
	if lc.URI != "" {
		if _, err := lc.listenURI(); err != nil {
			return nil, err
		}
	} else if _, err := (Listen{Transport: lc.Transport, Addr: "127.0.0.1:1"}).listenURI(); err != nil {
		return nil, err
	}
	if !bind {
		u, err := lc.listenURI() // port 0 stays 0: it is known once bound
		l.uri = u
		return l, err
	}
	ln, err := net.Listen("tcp", lc.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", lc.Transport, lc.Addr, err)
	}
	l.ln = ln
	bound := lc
	if lc.URI == "" {
		bound.Addr = ln.Addr().String() // the real port when the config said :0
	}
	if l.uri, err = bound.listenURI(); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return l, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", file)
	}
	return pool, nil
}

func (r *Relay) acceptLoop(l *listener) error {
	transport := "msrp"
	if l.tlsCfg != nil {
		transport = "msrps"
	}
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if r.shuttingDown.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors and the like: back off, keep serving.
			backoff = min(max(backoff*2, 5*time.Millisecond), time.Second)
			r.plog.Warn("accept_failed", "accept failed", slog.String("listen", l.cfg.Addr), slog.String("error", err.Error()))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		c := newConn(r, nc, event.DirIn, transport)
		c.uri = l.uri
		if limit := r.admit(c); limit != "" {
			r.stats.refused.Add(1)
			r.observe(event.Accepted, c, nil, 0, nil)
			c.close(event.CloseLimit, errors.New("connection limit"))
			r.observe(event.Closed, c, nil, event.CloseLimit, c.closeErr)
			if limit != refusedShutdown {
				r.logLimit(c, limit, slog.String("event", "refused"), slog.String("reason", event.CloseLimit.String()))
			}
			continue
		}
		r.stats.accepted.Add(1)
		r.wg.Add(1)
		go func() {
			if !r.observeAccepted(c) || l.tlsCfg != nil && !r.serverHandshake(c, l) {
				r.unregister(c)
				r.wg.Done()
				return
			}
			r.run(c)
		}()
	}
}

// observeAccepted reports an accepted connection, on its own goroutine
// (an Observer that panics closes this connection, not the accept loop).
func (r *Relay) observeAccepted(c *conn) bool {
	defer r.recoverConn(c, "accepted event")
	r.observe(event.Accepted, c, nil, 0, nil)
	return true
}

// serverHandshake runs the TLS handshake of an accepted msrps connection.
func (r *Relay) serverHandshake(c *conn, l *listener) (ok bool) {
	defer r.recoverConn(c, "TLS handshake")
	tc := tls.Server(c.nc, l.tlsCfg)
	ctx, cancel := context.WithTimeout(r.ctx, r.limits().TLSHandshakeTimeout)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	info := tlsInfo(tc, err)
	r.observe(event.TLSHandshake, c, info, 0, err)
	if err != nil {
		c.close(event.CloseTLSFailed, err)
		r.plog.Info("tls_failed", "TLS handshake failed", slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()),
			slog.String("error", err.Error()))
		r.observe(event.Closed, c, nil, event.CloseTLSFailed, err)
		return false
	}
	c.setNetConn(tc)
	c.setTLSSubject(tc)
	return true
}

func tlsInfo(tc *tls.Conn, err error) *event.TLSInfo {
	st := tc.ConnectionState()
	info := &event.TLSInfo{OK: err == nil, ServerName: st.ServerName}
	if st.HandshakeComplete {
		info.Version = tls.VersionName(st.Version)
		info.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
	}
	if len(st.PeerCertificates) > 0 {
		info.PeerSubject = st.PeerCertificates[0].Subject.String()
		info.PeerIssuer = st.PeerCertificates[0].Issuer.String()
	}
	return info
}
