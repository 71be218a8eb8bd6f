package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
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
		c, err := r.dial(u, key)
		// Under r.mu: c's run may end (a connect that failed at once) and
		// unregister compare e.c before e.ready is closed.
		r.mu.Lock()
		e.c, e.err = c, err
		r.mu.Unlock()
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
func (r *Relay) connect(pctx context.Context, u msrp.URI) (net.Conn, string, error) {
	rctx, rcancel := context.WithTimeout(pctx, r.limits().ConnectTimeout)
	hops, err := r.nextHops(rctx, u)
	rcancel()
	if err != nil {
		return nil, u.Host, err
	}
	d := net.Dialer{Resolver: r.tlsOut.resolver}
	dialContext := d.DialContext
	if r.dialHook != nil {
		dialContext = r.dialHook
	}
	var errs []error
	for _, hp := range hops {
		ctx, cancel := context.WithTimeout(pctx, r.limits().ConnectTimeout)
		nc, err := dialContext(ctx, "tcp", hp)
		cancel()
		if err == nil {
			return nc, hp, nil
		}
		errs = append(errs, fmt.Errorf("connect %s: %w", hp, err))
		if pctx.Err() != nil {
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
	// The connection exists at once, its TCP connect (and TLS handshake)
	// on its own goroutine (connectConn): the forwarder, reading its
	// sender's frames, goes on; what it writes meanwhile is buffered
	// (issue 15: a next hop that never answered held up the sender's next
	// frame, even to a local peer, for connect_timeout per SRV target, or
	// for the whole TLS handshake timeout).
	dc := &dialingConn{done: make(chan struct{}), wake: make(chan struct{})}
	var ctx context.Context
	ctx, dc.cancel = context.WithCancel(r.ctx)
	c := newConn(r, dc, event.DirOut, transport)
	// Observers see the attempt with the remote address known so far.
	if u.Port != 0 {
		if ap, err := netipParse(net.JoinHostPort(u.Host, strconv.Itoa(u.Port))); err == nil {
			c.info.Remote = ap
		}
	}
	c.key = key
	c.uri = r.ownURIFor(u.Secure)
	func() {
		defer func() {
			if p := recover(); p != nil {
				dc.cancel() // c never started: nothing else ends its context
				panic(p)
			}
		}()
		r.observe(event.ConnectStart, c, nil, 0, nil)
	}()
	if !r.register(c) {
		dc.cancel()
		return nil, errors.New("shutting down")
	}
	c.requestOK.Store(true)
	r.wg.Add(2)
	// u views the forwarded frame's To-Path (its buffer, or the read
	// loop's URI cache): the next frame reuses those bytes while the
	// connect goes on.
	go r.connectConn(ctx, c, dc, cloneURI(u))
	go r.run(c)
	return c, nil
}

// connectConn opens the dialled connection c: TCP to the first of u's
// next hops that accepts, then TLS for msrps, within connect_timeout and
// tls_handshake_timeout; then writes out what was buffered meanwhile. A
// failure closes c, which fails its pending transactions at once
// (failClosed).
func (r *Relay) connectConn(ctx context.Context, c *conn, dc *dialingConn, u msrp.URI) {
	defer r.wg.Done()
	over := false
	defer func() {
		// Also when an Observer panics: writers and the reader must not
		// wait forever, nor write past a buffer never flushed.
		if !over {
			err := errors.New("connect aborted")
			c.close(event.CloseTLSFailed, err)
			dc.finish(nil, err, 0)
		}
	}()
	defer r.recoverConn(c, "connect")
	defer dc.cancel()
	nc, hostport, err := r.connect(ctx, u)
	if err != nil {
		r.stats.dialFailed.Add(1)
		r.observe(event.ConnectFailed, c, nil, 0, err)
		c.connectFailed.Store(true)
		c.close(event.CloseWriteError, err)
		dc.finish(nil, err, 0)
		over = true
		return
	}
	r.stats.dialled.Add(1)
	c.setAddrs(addrPort(nc.LocalAddr()), addrPort(nc.RemoteAddr()))
	r.observe(event.Connected, c, nil, 0, nil)
	if u.Secure {
		cfg := r.tlsOut.base.Clone()
		if net.ParseIP(u.Host) == nil || !cfg.InsecureSkipVerify {
			// SNI and the name verified (or the IP SANs): a copy, u may
			// view a frame's buffer.
			cfg.ServerName = strings.Clone(u.Host)
		}
		tc := tls.Client(nc, cfg)
		nc = tc
		if !dc.setConn(tc) { // c closed meanwhile: Close cancels no handshake
			_ = tc.Close()
		}
		hctx, hcancel := context.WithTimeout(ctx, r.limits().TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err == nil {
			c.setTLSSubject(tc)
		}
		r.observe(event.TLSHandshake, c, tlsInfo(tc, err), 0, err)
		if err != nil {
			r.stats.dialFailed.Add(1)
			err = fmt.Errorf("TLS to %s: %w", hostport, err)
			c.close(event.CloseTLSFailed, err)
			dc.finish(nil, err, 0)
			over = true
			return
		}
	}
	if err := dc.finish(nc, nil, r.limits().SendTimeout); err != nil {
		c.close(writeCloseReason(err), err)
	}
	over = true
}

// netipParse parses "host:port" when host is an IP literal.
func netipParse(hostport string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// hsBufMax bounds what is buffered for a next hop whose connect or TLS
// handshake is still running; a writer beyond it waits for them (bounded
// by connect_timeout and tls_handshake_timeout), as for a slow next hop.
const hsBufMax = 64 << 10

// dialingConn is an outbound connection whose TCP connect and TLS
// handshake run on their own goroutine (connectConn): writes before they
// complete are buffered (up to hsBufMax), reads wait for them.
type dialingConn struct {
	cancel  context.CancelFunc // stops the connect and the handshake
	done    chan struct{}      // closed once connected (or failed) and flushed
	ready   atomic.Bool        // done, nc and err set: calls go straight through
	mu      sync.Mutex         // fields below before ready
	nc      net.Conn           // the TLS connection while its handshake runs, then the final one
	closed  bool
	rdl     time.Time     // the read deadline set meanwhile, applied once connected
	wake    chan struct{} // closed by a read deadline already past: a waiting Read returns
	pending []byte
	err     error
}

// setConn records the TLS connection whose handshake starts, so that Close
// ends it; false when dc was closed already.
func (d *dialingConn) setConn(nc net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nc = nc
	return !d.closed
}

func (d *dialingConn) Write(p []byte) (int, error) {
	for !d.ready.Load() {
		d.mu.Lock()
		if d.ready.Load() {
			d.mu.Unlock()
			break
		}
		if len(d.pending)+len(p) <= hsBufMax {
			d.pending = append(d.pending, p...)
			d.mu.Unlock()
			return len(p), nil
		}
		d.mu.Unlock()
		<-d.done
	}
	if d.err != nil {
		return 0, d.err
	}
	return d.nc.Write(p)
}

func (d *dialingConn) Read(p []byte) (int, error) {
	select {
	case <-d.done:
	case <-d.wake: // a shutdown's wake-up (Relay.shutdown)
		return 0, os.ErrDeadlineExceeded
	}
	if d.err != nil {
		return 0, d.err
	}
	return d.nc.Read(p)
}

func (d *dialingConn) Close() error {
	d.mu.Lock()
	if !d.ready.Load() {
		d.closed = true
		d.cancel()
		nc := d.nc
		d.mu.Unlock()
		if nc != nil {
			return nc.Close()
		}
		return nil
	}
	d.mu.Unlock()
	if d.nc == nil {
		return nil
	}
	return d.nc.Close()
}

// CloseWrite half-closes a connected TCP or TLS connection.
func (d *dialingConn) CloseWrite() error {
	if d.ready.Load() && d.err == nil {
		if cw, ok := d.nc.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
	}
	return errors.New("no write side to close")
}

func (d *dialingConn) LocalAddr() net.Addr {
	if d.ready.Load() && d.nc != nil {
		return d.nc.LocalAddr()
	}
	return nil
}

func (d *dialingConn) RemoteAddr() net.Addr {
	if d.ready.Load() && d.nc != nil {
		return d.nc.RemoteAddr()
	}
	return nil
}

// Write deadlines apply once connected: until then connect_timeout and
// tls_handshake_timeout bound the wait, and Close ends it. A read deadline
// set meanwhile applies once connected; one already past wakes a waiting
// Read at once.
func (d *dialingConn) SetDeadline(t time.Time) error {
	if d.ready.Load() && d.nc != nil {
		return d.nc.SetDeadline(t)
	}
	return nil
}

func (d *dialingConn) SetReadDeadline(t time.Time) error {
	if !d.ready.Load() {
		d.mu.Lock()
		if !d.ready.Load() {
			defer d.mu.Unlock()
			d.rdl = t
			if !t.IsZero() && !t.After(time.Now()) {
				select {
				case <-d.wake:
				default:
					close(d.wake)
				}
			}
			return nil
		}
		d.mu.Unlock()
	}
	if d.nc != nil {
		return d.nc.SetReadDeadline(t)
	}
	return nil
}

func (d *dialingConn) SetWriteDeadline(t time.Time) error {
	if d.ready.Load() && d.nc != nil {
		return d.nc.SetWriteDeadline(t)
	}
	return nil
}

// finish ends the connecting phase once: connected to nc (err nil), it
// writes what was buffered, within timeout, under the same lock that
// buffers (nothing can be buffered after the flush). The error it returns
// is what writes and reads return from now on; a dc closed meanwhile
// closes nc.
func (d *dialingConn) finish(nc net.Conn, err error, timeout time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready.Load() {
		return d.err
	}
	if err == nil && d.closed {
		err = net.ErrClosed
		_ = nc.Close()
	}
	if err == nil {
		d.nc = nc
		_ = nc.SetReadDeadline(d.rdl)
		if len(d.pending) > 0 {
			_ = nc.SetWriteDeadline(time.Now().Add(timeout))
			if _, werr := nc.Write(d.pending); werr != nil {
				err = fmt.Errorf("write after connect: %w", werr)
			}
		}
	}
	d.err, d.pending = err, nil
	d.ready.Store(true)
	close(d.done)
	return err
}

// cloneURI returns u with strings of its own.
func cloneURI(u msrp.URI) msrp.URI {
	u.User, u.Host, u.SessionID = strings.Clone(u.User), strings.Clone(u.Host), strings.Clone(u.SessionID)
	u.Transport, u.Params = strings.Clone(u.Transport), strings.Clone(u.Params)
	return u
}
