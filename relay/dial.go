package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/msrpscope/msrpscope/tracer/event"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// DefaultPort is used for a next-hop URI without a port (IANA "msrp").
const DefaultPort = 2855

var errDialAborted = errors.New("dial aborted")

// dialEntry is one outbound connection, or a dial in progress that other
// forwarders wait for instead of dialling again.
type dialEntry struct {
	ready chan struct{}
	c     *conn
	err   error
}

type tlsClient struct {
	base *tls.Config
}

func newTLSClient(o Outbound) (*tlsClient, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify}
	if o.CAFile != "" {
		pool, err := loadCAs(o.CAFile)
		if err != nil {
			return nil, cfgErr("outbound: %v", err)
		}
		cfg.RootCAs = pool
	}
	if o.Cert != "" || o.Key != "" {
		cert, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return nil, cfgErr("outbound: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &tlsClient{base: cfg}, nil
}

// outbound returns a connection to the next hop u: one already open to the
// same scheme, host and port (msrps connections are reused too; OpenSIPS
// opens a new one per forwarded request, as proto_msrp_send looks connections
// up as PROTO_MSRP only), or a new one.
func (r *Relay) outbound(u msrp.URI) (*conn, error) {
	port := u.Port
	if port == 0 {
		port = DefaultPort
	}
	hostport := net.JoinHostPort(u.Host, strconv.Itoa(port))
	key := u.Scheme() + "://" + hostport
	r.mu.Lock()
	if r.shuttingDown.Load() {
		r.mu.Unlock()
		return nil, errors.New("shutting down")
	}
	if e := r.out[key]; e != nil {
		r.mu.Unlock()
		<-e.ready
		if e.err == nil && !e.c.isClosed() {
			return e.c, nil
		}
		r.mu.Lock()
		if r.out[key] == e {
			delete(r.out, key)
		}
	}
	e := &dialEntry{ready: make(chan struct{})}
	r.out[key] = e
	r.mu.Unlock()

	func() {
		// Closed also when dial panics (an Observer's bug, recovered by the
		// caller's read loop): the forwarders waiting on it see the error
		// instead of waiting forever.
		defer close(e.ready)
		e.err = errDialAborted
		e.c, e.err = r.dial(u, hostport, key)
	}()
	if e.err != nil {
		r.mu.Lock()
		if r.out[key] == e {
			delete(r.out, key)
		}
		r.mu.Unlock()
		return nil, e.err
	}
	return e.c, nil
}

func (r *Relay) dial(u msrp.URI, hostport, key string) (*conn, error) {
	transport := "msrp"
	if u.Secure {
		transport = "msrps"
	}
	// Observers see the attempt with the remote address known so far.
	pre := &conn{r: r, info: event.ConnInfo{ID: r.newConnID(), Transport: transport, Dir: event.DirOut}}
	if ap, err := netipParse(hostport); err == nil {
		pre.info.Remote = ap
	}
	r.observe(event.ConnectStart, pre, nil, 0, nil)
	ctx, cancel := context.WithTimeout(r.ctx, r.limits().ConnectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		r.stats.dialFailed.Add(1)
		err = fmt.Errorf("connect %s: %w", hostport, err)
		r.observe(event.ConnectFailed, pre, nil, 0, err)
		return nil, err
	}
	c := newConn(r, nc, event.DirOut, transport)
	c.info.ID = pre.info.ID
	c.key = key
	c.uri = r.ownURIFor(u.Secure)
	r.observe(event.Connected, c, nil, 0, nil)
	if u.Secure {
		cfg := r.tlsOut.base.Clone()
		if net.ParseIP(u.Host) == nil || !cfg.InsecureSkipVerify {
			// SNI and the name verified (or the IP SANs): a copy, u may
			// view a frame's buffer.
			cfg.ServerName = strings.Clone(u.Host)
		}
		tc := tls.Client(nc, cfg)
		hctx, hcancel := context.WithTimeout(r.ctx, r.limits().TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		r.observe(event.TLSHandshake, c, tlsInfo(tc, err), 0, err)
		if err != nil {
			r.stats.dialFailed.Add(1)
			c.close(event.CloseTLSFailed, err)
			r.observe(event.Closed, c, nil, event.CloseTLSFailed, err)
			return nil, fmt.Errorf("TLS to %s: %w", hostport, err)
		}
		c.setNetConn(tc)
		c.setTLSSubject(tc)
	}
	if !r.register(c) {
		c.close(event.CloseShutdown, nil)
		r.observe(event.Closed, c, nil, event.CloseShutdown, nil)
		return nil, errors.New("shutting down")
	}
	r.stats.dialled.Add(1)
	c.requestOK.Store(true)
	r.wg.Add(1)
	go r.run(c)
	return c, nil
}

// netipParse parses "host:port" when host is an IP literal.
func netipParse(hostport string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
