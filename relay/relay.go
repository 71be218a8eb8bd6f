// Package relay owns the MSRP relay of RFC 4976: listeners, connections,
// AUTH sessions, routing along To-Path/From-Path, transactions and limits.
//
// It reports every connection event and frame to an event.Observer (implemented
// by the tracer) and imports nothing of tracing, HEP or storage. The wire
// format lives in relay/msrp, digest authentication in relay/auth.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/msrpscope/msrpscope/tracer/event"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
	"github.com/msrpscope/msrpscope/relay/auth"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Relay is a running MSRP relay. Create it with New, run it with Serve.
type Relay struct {
	cfg          Config
	lim          atomic.Pointer[Limits] // replaced whole by Reload
	users        *auth.Users            // its content replaced by Reload
	authCfg      Auth
	log          *slog.Logger
	obs          event.Observer
	obsSwitch    interface{ Enabled() bool } // the Observer's on/off switch, when it has one
	obsWire      interface{ Wire() bool }    // whether the Observer wants wire bytes, when it says
	auth         *auth.Authenticator
	captureBytes int
	plog         *ratelog.Logger // lines a peer can trigger: rate-limited (logs.go)

	listeners []*listener
	own       []msrp.URI // every URI that names this relay

	sessions *sessionTable
	txns     *txnTable

	mu           sync.Mutex
	conns        map[uint64]*conn
	perIP        map[netip.Addr]int
	out          map[string]*dialEntry
	wg           sync.WaitGroup // every connection goroutine
	ctx          context.Context
	cancel       context.CancelFunc
	serving      atomic.Bool
	tlsOut       *tlsClient
	dialHook     func(ctx context.Context, network, addr string) (net.Conn, error) // tests: replaces the TCP connect
	insecureOut  bool                                                              // relay.outbound.insecure_skip_verify: warn on each msrps dial
	connIDBase   uint64                                                            // random high 32 bits of this instance's connection ids
	nextConnID   atomic.Uint32
	shuttingDown atomic.Bool
	shutdownAt   atomic.Int64 // UnixNano when shuttingDown was set
	aborting     atomic.Bool  // the shutdown grace is over: frames in flight end
	reading      atomic.Int32 // read loops running
	framing      atomic.Int32 // read loops in a frame not routed yet (graceful shutdown: conn.awaitsResponses)
	quietRuns    atomic.Int64 // closeQuiet's passes (tests)
	clock        atomic.Int64 // Unix ns, updated by the sweeper every txnTick (now)

	stats counters

	panicLogMu         sync.Mutex
	panicLogged        time.Time // last panic logged with its stack
	panicLogSuppressed int       // panics since then not logged
}

// counters are the relay's statistics; Stats returns a snapshot.
type counters struct {
	accepted, refused, dialled, dialFailed          atomic.Int64
	forwarded, forwardFailed, rejected, badFrames   atomic.Int64
	authOK, authFailed, reportsSent, reportsDropped atomic.Int64
	unmatchedResponses, txnTimeouts, queueFull      atomic.Int64
	panics                                          atomic.Int64
}

// Stats is a snapshot of the relay's counters and tables.
type Stats struct {
	Connections        int
	Sessions           int
	Transactions       int
	Accepted           int64 // inbound connections accepted
	Refused            int64 // inbound connections refused by a limit
	Dialled            int64 // outbound connections established
	DialFailed         int64
	Forwarded          int64 // requests forwarded
	ForwardFailed      int64 // requests whose next hop failed
	Rejected           int64 // requests answered with an error (or dropped when no answer is allowed)
	BadFrames          int64 // malformed frames
	AuthOK             int64
	AuthFailed         int64
	ReportsSent        int64
	ReportsDropped     int64 // REPORTs for a connection that is gone
	UnmatchedResponses int64
	TxnTimeouts        int64
	QueueFull          int64 // connections closed while frames waited for room in their write queue (the peer did not read for send_timeout)
	Panics             int64 // connections closed because handling them panicked (recovered, logged with the stack)
}

// limits returns the limits in force (Reload replaces them).
func (r *Relay) limits() *Limits { return r.lim.Load() }

// Reload applies what of cfg can change while the relay runs: the limits
// (timeouts and counts at once; write_queue, max_header_bytes, max_headers
// and send_timeout's per-connection parts for connections opened after)
// and the users file (when cfg.Users is nil and auth.users_file is set;
// sessions already granted stay). Everything else needs a restart: the
// keys of cfg that differ from the running ones and were not applied are
// returned, for the caller to warn about. On error nothing changes.
func (r *Relay) Reload(cfg Config) (needRestart []string, err error) {
	lim := cfg.Limits.withDefaults()
	users := cfg.Users
	if users == nil && cfg.Auth.UsersFile != "" {
		if users, err = auth.LoadUsers(cfg.Auth.UsersFile); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	r.lim.Store(&lim)
	r.sessions.setMax(lim.MaxSessions, lim.MaxSessionsPerUser)
	if users != nil {
		r.users.Replace(users)
	}
	old := r.cfg
	if !reflect.DeepEqual(old.Listen, cfg.Listen) {
		needRestart = append(needRestart, "listen")
	}
	if !slices.Equal(old.URIs, cfg.URIs) {
		needRestart = append(needRestart, "relay.uris")
	}
	oa, na := old.Auth, cfg.Auth
	oa.UsersFile, na.UsersFile = "", ""
	if !reflect.DeepEqual(oa, na) {
		needRestart = append(needRestart, "relay.auth (but users_file)")
	}
	if old.Outbound != cfg.Outbound {
		needRestart = append(needRestart, "relay.outbound")
	}
	if old.TraceCaptureBytes != cfg.TraceCaptureBytes {
		needRestart = append(needRestart, "relay.trace_capture_bytes")
	}
	return needRestart, nil
}

// New checks cfg, binds the listeners and returns a Relay ready to Serve.
func New(cfg Config) (*Relay, error) { return newRelay(cfg, true) }

// CheckConfig checks cfg as New does (certificates, URIs, users, limits)
// without binding any socket.
func CheckConfig(cfg Config) error {
	_, err := newRelay(cfg, false)
	return err
}

func newRelay(cfg Config, bind bool) (*Relay, error) {
	r := &Relay{
		cfg:     cfg,
		authCfg: cfg.Auth,
		log:     cfg.Logger,
		obs:     cfg.Observer,
		conns:   make(map[uint64]*conn),
		perIP:   make(map[netip.Addr]int),
		out:     make(map[string]*dialEntry),
		txns:    newTxnTable(),
	}
	r.clock.Store(time.Now().UnixNano())
	var idb [4]byte
	_, _ = rand.Read(idb[:]) // never fails (crypto/rand)
	r.connIDBase = uint64(binary.BigEndian.Uint32(idb[:])) << 32
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.plog = ratelog.New(r.log, cfg.LogRate)
	if sw, ok := r.obs.(interface{ Enabled() bool }); ok {
		r.obsSwitch = sw
	}
	if w, ok := r.obs.(interface{ Wire() bool }); ok {
		r.obsWire = w
	}
	r.captureBytes = orInt(cfg.TraceCaptureBytes, DefaultTraceCaptureBytes)
	lim := cfg.Limits.withDefaults()
	r.lim.Store(&lim)
	r.sessions = newSessionTable(lim.MaxSessions, lim.MaxSessionsPerUser)
	if len(cfg.Listen) == 0 {
		return nil, cfgErr("no listen address")
	}
	var err error
	if r.tlsOut, err = newTLSClient(cfg.Outbound); err != nil {
		return nil, err
	}
	r.insecureOut = cfg.Outbound.InsecureSkipVerify
	if bind && r.insecureOut {
		// CheckConfig stays quiet: -check-config prints its own warning (cmd/msrpscope).
		r.log.Warn("relay.outbound.insecure_skip_verify is on: msrps next hops are not verified, anyone on the path can read and change the traffic (tests only)")
	}
	for _, lc := range cfg.Listen {
		l, err := r.listen(lc, bind)
		if err != nil {
			r.closeListeners()
			return nil, err
		}
		r.listeners = append(r.listeners, l)
		r.own = append(r.own, l.uri)
	}
	for _, s := range cfg.URIs {
		u, err := msrp.ParseURI(s)
		if err != nil {
			r.closeListeners()
			return nil, cfgErr("uris: %v", err)
		}
		r.own = append(r.own, u)
	}
	if err := r.setupAuth(); err != nil {
		r.closeListeners()
		return nil, err
	}
	return r, nil
}

func (r *Relay) setupAuth() error {
	a := &r.authCfg
	if a.Realm == "" {
		a.Realm = r.own[0].Host
	}
	d := DefaultAuth()
	a.Expires = orInt(a.Expires, d.Expires)
	a.MinExpires = orInt(a.MinExpires, d.MinExpires)
	a.MaxExpires = orInt(a.MaxExpires, d.MaxExpires)
	if a.MinExpires > a.MaxExpires || a.Expires < a.MinExpires || a.Expires > a.MaxExpires {
		return cfgErr("auth: need min_expires <= expires <= max_expires (got %d, %d, %d)", a.MinExpires, a.Expires, a.MaxExpires)
	}
	users := r.cfg.Users
	if users == nil {
		if a.UsersFile == "" {
			return cfgErr("auth: no users (set auth.users_file)")
		}
		var err error
		if users, err = auth.LoadUsers(a.UsersFile); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	var secret []byte
	if a.NonceSecret != "" {
		var err error
		if secret, err = hex.DecodeString(a.NonceSecret); err != nil || len(secret) < 32 {
			return cfgErr("auth.nonce_secret must be at least 32 bytes in hex")
		}
	}
	algs := make([]auth.Algorithm, 0, len(a.Algorithms))
	for _, s := range a.Algorithms {
		algs = append(algs, auth.Algorithm(s))
	}
	au, err := auth.New(auth.Config{Realm: a.Realm, URIs: r.own, Algorithms: algs, NonceTTL: a.NonceTTL, Secret: secret, Users: users})
	if err != nil {
		return fmt.Errorf("%w: auth: %w", ErrConfig, err)
	}
	r.auth, r.users = au, users
	return nil
}

// URIs returns the URIs of the listeners, in configuration order: what
// clients put in To-Path to reach this relay.
func (r *Relay) URIs() []msrp.URI {
	out := make([]msrp.URI, len(r.listeners))
	for i, l := range r.listeners {
		out[i] = l.uri
	}
	return out
}

// Addrs returns the bound listener addresses.
func (r *Relay) Addrs() []net.Addr {
	out := make([]net.Addr, len(r.listeners))
	for i, l := range r.listeners {
		out[i] = l.ln.Addr()
	}
	return out
}

// isOwn reports whether u names this relay (scheme, host, port, transport;
// the session-id is not compared).
func (r *Relay) isOwn(u msrp.URI) bool {
	for i := range r.own {
		if r.own[i].SameAuthority(u) {
			return true
		}
	}
	return false
}

// Serve accepts and relays until ctx is cancelled, then shuts down
// gracefully: listeners close, connections finish the frame they are in,
// queued responses are written, and connections close. It returns nil after
// a shutdown, or the first listener error.
func (r *Relay) Serve(ctx context.Context) error {
	if !r.serving.CompareAndSwap(false, true) {
		return errors.New("relay: Serve called twice")
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// New may have been long ago: the sweeper's first tick is 250 ms away.
	r.clock.Store(time.Now().UnixNano())
	defer r.plog.Flush() // the counts of suppressed lines, last
	defer r.cancel()
	errc := make(chan error, len(r.listeners))
	var lwg sync.WaitGroup
	for _, l := range r.listeners {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			errc <- r.acceptLoop(l)
		}()
	}
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		r.sweep(r.ctx)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.shutdown()
	lwg.Wait()
	r.cancel()
	<-sweepDone
	return err
}

// shutdown stops accepting and reading new requests, lets the frames in
// flight finish and the responses awaited on connections arrive within
// limits.shutdown_grace, and closes each connection once it is quiet (its
// read loop ended, no frame is written to it, no response may go back to
// it), after writing what is queued for it. A read loop goes on while a
// frame read on any connection is not routed yet (Relay.framing): it may
// be routed to it, and its destination must not close under it. When the grace is over, the
// frames still in flight end with '#' (RFC 4975 §7.1), every transaction
// still pending fails (a SEND answered 200 gets its failure REPORT,
// RFC 4976 §6.4.1: the 200 meant receipt, not delivery) and the
// connections close after flushing, within send_timeout.
func (r *Relay) shutdown() {
	r.shutdownAt.Store(time.Now().UnixNano())
	r.shuttingDown.Store(true)
	r.closeListeners()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	lim := r.limits()
	grace := time.NewTimer(lim.ShutdownGrace)
	defer grace.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for graceOver := false; !graceOver; {
		r.closeQuiet()
		select {
		case <-done:
			return
		case <-tick.C:
		case <-grace.C:
			graceOver = true
		}
	}

	// The grace is over: end the frames in flight, fail what is pending.
	r.aborting.Store(true)
	for _, c := range r.connList() {
		c.interruptNow() // wakes a read; deadlineReader refuses the next
	}
	// A forward stalled on a slow next hop gives up within send_timeout.
	for until := time.Now().Add(lim.SendTimeout); r.reading.Load() > 0 && time.Now().Before(until); {
		<-tick.C
	}
	for _, x := range r.txns.takeAll(nil) {
		if x.method != "SEND" || x.report != msrp.ReportNo {
			r.failTxn(x, 408, "Relay shutting down", nil)
		}
		x.release()
	}
	r.closeQuiet()
	t := time.NewTimer(lim.SendTimeout + closeLinger)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			r.closeQuiet()
			continue
		case <-t.C:
		}
		break
	}
	for _, c := range r.connList() {
		c.close(event.CloseShutdown, nil)
	}
	<-done
}

// closeQuiet queues the close of every connection that may close now in a
// graceful shutdown, and wakes the idle read loops that may stop.
func (r *Relay) closeQuiet() {
	r.quietRuns.Add(1)
	aborting := r.aborting.Load()
	for _, c := range r.connList() {
		c.interruptIdle()
		if (aborting && c.readEnded.Load() || c.quiet()) && c.closing.CompareAndSwap(false, true) {
			if c.queueRoom() {
				c.closeAfterFlush(event.CloseShutdown, nil, nil)
			} else {
				go c.closeAfterFlush(event.CloseShutdown, nil, nil) // waits for room, up to send_timeout
			}
		}
	}
}

// connList returns the registered connections.
func (r *Relay) connList() []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*conn, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	return out
}

// refusesNew reports whether a request whose first byte arrived at start
// is refused: it came after the shutdown began.
func (r *Relay) refusesNew(start time.Time) bool {
	return r.shuttingDown.Load() && start.UnixNano() >= r.shutdownAt.Load()
}

func (r *Relay) closeListeners() {
	for _, l := range r.listeners {
		if l.ln != nil {
			_ = l.ln.Close()
		}
	}
}

// now is a coarse clock for deadlines that need no precision (idle
// timeouts, transaction timeouts, both rounded to txnTick): at most one
// sweep tick late, and no clock read on the frame path.
func (r *Relay) now() time.Time { return time.Unix(0, r.clock.Load()) }

// sweep expires sessions and transactions.
func (r *Relay) sweep(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var buf []*txn
	tick := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.clock.Store(now.UnixNano())
			// Sessions expire in whole seconds: scan them once a second.
			if tick++; tick%4 == 0 {
				r.sessions.expire(now)
			}
			buf = r.txns.expired(now, buf[:0])
			for _, x := range buf {
				r.stats.txnTimeouts.Add(1)
				switch {
				case x.method == "SEND" && x.report != msrp.ReportYes:
					x.release()
				case x.src.queueRoom():
					r.failTxn(x, 408, "Request Timeout", nil)
					x.release()
				default:
					// A full queue makes the caller wait (back-pressure)
					// up to send_timeout: not the sweeper, which would
					// hold up every other expiry.
					go func(x *txn) {
						defer x.release()
						r.failTxn(x, 408, "Request Timeout", nil)
					}(x)
				}
			}
			clear(buf)
		}
	}
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	nconn := len(r.conns)
	r.mu.Unlock()
	s := &r.stats
	return Stats{
		Connections: nconn, Sessions: r.sessions.len(), Transactions: r.txns.len(),
		Accepted: s.accepted.Load(), Refused: s.refused.Load(), Dialled: s.dialled.Load(), DialFailed: s.dialFailed.Load(),
		Forwarded: s.forwarded.Load(), ForwardFailed: s.forwardFailed.Load(), Rejected: s.rejected.Load(),
		BadFrames: s.badFrames.Load(), AuthOK: s.authOK.Load(), AuthFailed: s.authFailed.Load(),
		ReportsSent: s.reportsSent.Load(), ReportsDropped: s.reportsDropped.Load(),
		UnmatchedResponses: s.unmatchedResponses.Load(), TxnTimeouts: s.txnTimeouts.Load(), QueueFull: s.queueFull.Load(),
		Panics: s.panics.Load(),
	}
}

// newConnID returns a connection id unique to this relay instance: random
// high 32 bits chosen at start, a counter in the low 32 bits, so that
// "conn-<id>" does not repeat after a restart or between relays feeding
// one collector.
func (r *Relay) newConnID() uint64 { return r.connIDBase | uint64(r.nextConnID.Add(1)) }

// recoverConn, deferred at the top of a connection's goroutines, turns a
// panic while handling c (routing, an Observer's filter or encoding) into
// the close of c alone: counted, the connection closed with
// event.ClosePanic, logged at ERROR with the stack (rate-limited); the
// relay keeps serving. As net/http's conn.serve does.
func (r *Relay) recoverConn(c *conn, where string) {
	p := recover()
	if p == nil {
		return
	}
	r.stats.panics.Add(1)
	err := fmt.Errorf("panic in %s: %v", where, p)
	c.close(event.ClosePanic, err)
	// A peer may be able to trigger the same bug again and again: one
	// log line with a stack per second at most, saying how many were not.
	now := time.Now()
	r.panicLogMu.Lock()
	if now.Sub(r.panicLogged) < time.Second {
		r.panicLogSuppressed++
		r.panicLogMu.Unlock()
		return
	}
	suppressed := r.panicLogSuppressed
	r.panicLogged, r.panicLogSuppressed = now, 0
	r.panicLogMu.Unlock()
	r.log.Error("connection handler panicked", slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()),
		slog.String("error", err.Error()), slog.Int("suppressed_since_last", suppressed), slog.String("stack", string(debug.Stack())))
}

// tracing reports whether frames are to be reported now: there is an
// Observer and its switch, if it has one, is on. Connection events are
// always reported (observers track connections with them).
func (r *Relay) tracing() bool {
	return r.obs != nil && (r.obsSwitch == nil || r.obsSwitch.Enabled())
}

// wire reports whether a frame being reported now also carries its wire
// bytes: the Observer has no Wire method, or it answers true. Asked once
// per frame, after tracing() said true.
func (r *Relay) wire() bool {
	return r.obsWire == nil || r.obsWire.Wire()
}

// observe reports a connection event.
func (r *Relay) observe(kind event.Kind, c *conn, tlsInfo *event.TLSInfo, reason event.CloseReason, err error) {
	if r.insecureOut && kind == event.TLSHandshake && err == nil && c.info.Dir == event.DirOut {
		// The connect-time warning: here, where the dialled handshake is reported (dial.go).
		r.plog.Warn("insecure_dial", "msrps next hop connected without verification (relay.outbound.insecure_skip_verify)",
			slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()))
	}
	if r.obs == nil {
		return
	}
	ev := event.Event{Kind: kind, Time: time.Now(), Conn: c.connInfo(), TLS: tlsInfo, Reason: reason, Err: err}
	r.obs.Observe(&ev)
}

// register adds c to the connection table, enforcing the limits for
// inbound connections.
func (r *Relay) register(c *conn) bool { return r.admit(c) == "" }

// admit is register, saying why c was refused: the limit's configuration
// key, or refusedShutdown; "" when c was admitted.
func (r *Relay) admit(c *conn) (refusedBy string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shuttingDown.Load() {
		return refusedShutdown
	}
	if c.info.Dir == event.DirIn {
		ip := c.info.Remote.Addr()
		if len(r.conns) >= r.limits().MaxConnections {
			return limitMaxConnections
		}
		if r.perIP[ip] >= r.limits().MaxConnectionsPerIP {
			return limitMaxConnectionsPerIP
		}
		r.perIP[ip]++
	}
	r.conns[c.info.ID] = c
	return ""
}

func (r *Relay) unregister(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.conns[c.info.ID]; !ok {
		return
	}
	delete(r.conns, c.info.ID)
	if c.info.Dir == event.DirIn {
		ip := c.info.Remote.Addr()
		if r.perIP[ip]--; r.perIP[ip] <= 0 {
			delete(r.perIP, ip)
		}
	}
	if c.key != "" {
		if e := r.out[c.key]; e != nil && e.c == c {
			delete(r.out, c.key)
		}
	}
}

// run owns a registered connection's goroutines until it closes.
func (r *Relay) run(c *conn) {
	defer r.wg.Done()
	r.reading.Add(1)
	func() {
		defer r.reading.Add(-1)
		defer c.readEnded.Store(true)
		defer r.recoverConn(c, "read loop")
		c.readLoop()
	}()
	// Reading ended without an error only in a graceful shutdown: the
	// shutdown closes c once it is quiet (Relay.shutdown).
	<-c.done
	c.stopWriter()
	r.failClosed(c)
	n := r.sessions.dropConn(c)
	r.unregister(c)
	lvl := slog.LevelDebug
	if c.reason != event.CloseEOF && c.reason != event.CloseShutdown {
		lvl = slog.LevelInfo
	}
	attrs := []slog.Attr{slog.Uint64("conn", c.info.ID), slog.String("remote", c.connInfo().Remote.String()),
		slog.String("reason", c.reason.String()), slog.Int("sessions_dropped", n)}
	if c.closeErr != nil {
		attrs = append(attrs, slog.String("error", c.closeErr.Error()))
	}
	r.plog.Log(lvl, "closed "+c.reason.String(), "connection closed", attrs...)
	if c.connectFailed.Load() {
		return // never opened: its ConnectFailed event said so
	}
	defer r.recoverConn(c, "closed event")
	r.observe(event.Closed, c, nil, c.reason, c.closeErr)
}

// ownURIFor returns our URI for a scheme, for connections we dialled.
func (r *Relay) ownURIFor(secure bool) msrp.URI {
	for _, u := range r.own {
		if u.Secure == secure {
			return u
		}
	}
	return r.own[0]
}
