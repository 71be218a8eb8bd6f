package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
	"github.com/msrpscope/msrpscope/tracer/event"
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

// tlsClient holds the settings of outbound connections: the TLS
// configuration and the resolver next-hop names are looked up with.
type tlsClient struct {
	base     *tls.Config
	resolver *net.Resolver
}

// newResolver returns the system resolver, or with addr ("host:port") a
// resolver that asks only that DNS server (relay.outbound.dns).
func newResolver(addr string) (*net.Resolver, error) {
	if addr == "" {
		return net.DefaultResolver, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, cfgErr("outbound: dns %q: %v", addr, err)
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}, nil
}

func newTLSClient(o Outbound) (*tlsClient, error) {
	res, err := newResolver(o.DNS)
	if err != nil {
		return nil, err
	}
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
	return &tlsClient{base: cfg, resolver: res}, nil
}

// outbound returns a connection to the next hop u: one already open to the
// same scheme, host and port (msrps connections are reused too; OpenSIPS
// opens a new one per forwarded request, as proto_msrp_send looks connections
// up as PROTO_MSRP only), or a new one.
func (r *Relay) outbound(u msrp.URI) (*conn, error) {
	// A name without a port is resolved by SRV (nextHops), so it is its
	// own key: not the same next hop as name:2855.
	key := u.Scheme() + "://" + net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
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
		e.c, e.err = r.dial(u, key)
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

// nextHops returns the host:port addresses to try for u, in order.
//
// RFC 4976's resolution of a relay URI: an IP literal or a name with a
// port is used as it is (a name resolved by A/AAAA); a name without a port
// is looked up as SRV _msrps._tcp.<name> (_msrp._tcp for msrp), the
// targets tried by priority, randomly by weight within one priority
// (RFC 2782; net.Resolver.LookupSRV orders them so); without SRV records,
// A/AAAA on the default port 2855.
func (r *Relay) nextHops(ctx context.Context, u msrp.URI) ([]string, error) {
	if u.Port != 0 {
		return []string{net.JoinHostPort(u.Host, strconv.Itoa(u.Port))}, nil
	}
	fallback := []string{net.JoinHostPort(u.Host, strconv.Itoa(DefaultPort))}
	if _, err := netip.ParseAddr(u.Host); err == nil {
		return fallback, nil
	}
	_, srvs, err := r.tlsOut.resolver.LookupSRV(ctx, u.Scheme(), "tcp", u.Host)
	if err != nil || len(srvs) == 0 {
		var de *net.DNSError
		if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
			r.log.Debug("SRV lookup failed, using A/AAAA", slog.String("host", u.Host), slog.String("error", err.Error()))
		}
		return fallback, nil
	}
	// RFC 2782: a single target "." means the service is decidedly not
	// available at this domain.
	if len(srvs) == 1 && (srvs[0].Target == "." || srvs[0].Target == "") {
		return nil, fmt.Errorf("no %s service at %s (SRV target \".\")", u.Scheme(), u.Host)
	}
	hops := make([]string, 0, len(srvs))
	for _, s := range srvs {
		hops = append(hops, net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port))))
	}
	return hops, nil
}

// connect opens TCP to the first of u's next hops that accepts: a target
// that refuses or does not answer within connect_timeout is followed by
// the next (RFC 2782).
func (r *Relay) connect(u msrp.URI) (net.Conn, string, error) {
	rctx, rcancel := context.WithTimeout(r.ctx, r.limits().ConnectTimeout)
	hops, err := r.nextHops(rctx, u)
	rcancel()
	if err != nil {
		return nil, u.Host, err
	}
	d := net.Dialer{Resolver: r.tlsOut.resolver}
	var errs []error
	for _, hp := range hops {
		ctx, cancel := context.WithTimeout(r.ctx, r.limits().ConnectTimeout)
		nc, err := d.DialContext(ctx, "tcp", hp)
		cancel()
		if err == nil {
			return nc, hp, nil
		}
		errs = append(errs, fmt.Errorf("connect %s: %w", hp, err))
		if r.ctx.Err() != nil {
			break
		}
	}
	return nil, hops[0], errors.Join(errs...)
}

func (r *Relay) dial(u msrp.URI, key string) (*conn, error) {
	transport := "msrp"
	if u.Secure {
		transport = "msrps"
	}
	// Observers see the attempt with the remote address known so far.
	pre := &conn{r: r, info: event.ConnInfo{ID: r.newConnID(), Transport: transport, Dir: event.DirOut}}
	if u.Port != 0 {
		if ap, err := netipParse(net.JoinHostPort(u.Host, strconv.Itoa(u.Port))); err == nil {
			pre.info.Remote = ap
		}
	}
	r.observe(event.ConnectStart, pre, nil, 0, nil)
	nc, hostport, err := r.connect(u)
	if err != nil {
		r.stats.dialFailed.Add(1)
		r.observe(event.ConnectFailed, pre, nil, 0, err)
		return nil, err
	}
	c := newConn(r, nc, event.DirOut, transport)
	c.info.ID = pre.info.ID
	c.key = key
	c.uri = r.ownURIFor(u.Secure)
	r.observe(event.Connected, c, nil, 0, nil)
	var hc *handshakingConn
	if u.Secure {
		cfg := r.tlsOut.base.Clone()
		if net.ParseIP(u.Host) == nil || !cfg.InsecureSkipVerify {
			// SNI and the name verified (or the IP SANs): a copy, u may
			// view a frame's buffer.
			cfg.ServerName = strings.Clone(u.Host)
		}
		// The handshake runs on its own goroutine (handshake): the
		// forwarder, reading its sender's frames, goes on at once; what it
		// writes before the handshake completes is buffered (issue 15: a
		// next hop that never completes TLS held up the sender's next
		// frame, even to a local peer, for the whole handshake timeout).
		hc = &handshakingConn{Conn: tls.Client(nc, cfg), done: make(chan struct{})}
		c.setNetConn(hc)
	}
	if !r.register(c) {
		c.close(event.CloseShutdown, nil)
		r.observe(event.Closed, c, nil, event.CloseShutdown, nil)
		return nil, errors.New("shutting down")
	}
	if hc != nil {
		r.wg.Add(1)
		go r.handshake(c, hc, hostport)
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

// handshake completes the TLS handshake of the dialled connection c within
// tls_handshake_timeout, then writes out what was buffered meanwhile; a
// failed handshake closes c, which fails its pending transactions at once
// (failClosed).
func (r *Relay) handshake(c *conn, hc *handshakingConn, hostport string) {
	defer r.wg.Done()
	over := false
	defer func() {
		// Also when an Observer panics: writers and the reader must not
		// wait forever, nor write past a buffer never flushed.
		if !over {
			err := errors.New("TLS handshake aborted")
			c.close(event.CloseTLSFailed, err)
			hc.finish(err, 0)
		}
	}()
	defer r.recoverConn(c, "TLS handshake")
	hctx, hcancel := context.WithTimeout(r.ctx, r.limits().TLSHandshakeTimeout)
	err := hc.HandshakeContext(hctx)
	hcancel()
	if err == nil {
		c.setTLSSubject(hc.Conn)
	}
	r.observe(event.TLSHandshake, c, tlsInfo(hc.Conn, err), 0, err)
	if err != nil {
		r.stats.dialFailed.Add(1)
		err = fmt.Errorf("TLS to %s: %w", hostport, err)
		c.close(event.CloseTLSFailed, err)
		hc.finish(err, 0)
		over = true
		return
	}
	if err := hc.finish(nil, r.limits().SendTimeout); err != nil {
		c.close(writeCloseReason(err), err)
	}
	over = true
}

// hsBufMax bounds what is buffered for a next hop whose TLS handshake is
// still running; a writer beyond it waits for the handshake (bounded by
// tls_handshake_timeout), as for a slow next hop.
const hsBufMax = 64 << 10

// handshakingConn is an outbound TLS connection whose handshake runs on
// its own goroutine: writes before it completes are buffered (up to
// hsBufMax), reads wait for it.
type handshakingConn struct {
	*tls.Conn
	done    chan struct{} // closed once the handshake and the flush are over
	ready   atomic.Bool   // done and err set: writes go straight through
	mu      sync.Mutex    // pending, err before ready
	pending []byte
	err     error
}

func (h *handshakingConn) Write(p []byte) (int, error) {
	for !h.ready.Load() {
		h.mu.Lock()
		if h.ready.Load() {
			h.mu.Unlock()
			break
		}
		if len(h.pending)+len(p) <= hsBufMax {
			h.pending = append(h.pending, p...)
			h.mu.Unlock()
			return len(p), nil
		}
		h.mu.Unlock()
		<-h.done
	}
	if h.err != nil {
		return 0, h.err
	}
	return h.Conn.Write(p)
}

func (h *handshakingConn) Read(p []byte) (int, error) {
	<-h.done
	if h.err != nil {
		return 0, h.err
	}
	return h.Conn.Read(p)
}

// finish ends the handshake phase once: after a handshake that succeeded
// (err nil) it writes what was buffered, within timeout, under the same
// lock that buffers (nothing can be buffered after the flush). The error
// it returns is what writes and reads return from now on.
func (h *handshakingConn) finish(err error, timeout time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ready.Load() {
		return h.err
	}
	if err == nil && len(h.pending) > 0 {
		_ = h.Conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, werr := h.Conn.Write(h.pending); werr != nil {
			err = fmt.Errorf("write after TLS handshake: %w", werr)
		}
	}
	h.err, h.pending = err, nil
	h.ready.Store(true)
	close(h.done)
	return err
}
