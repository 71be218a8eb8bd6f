// Package msrpclient is an MSRP endpoint (RFC 4975, the client side of RFC 4976) for tests and load.
// A Client owns one TCP or TLS connection, one reader goroutine (stopped by Close) and serialises its writes with a mutex.
package msrpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Defaults for zero fields of Options.
const (
	DefaultResponseTimeout = 30 * time.Second // RFC 4975 §7.1.1
	DefaultWindow          = 64
	DefaultIncomingQueue   = 256
	DefaultMaxBodyKeep     = 1 << 20
	DefaultReadBufferSize  = 64 << 10
	DefaultStreamChunk     = 256 << 10
)

var (
	// ErrTimeout fails a transaction that got no response within
	// Options.ResponseTimeout after its last byte was written.
	ErrTimeout = errors.New("msrpclient: no response within the timeout")
	// ErrClosed fails transactions still open when the connection closes.
	ErrClosed = errors.New("msrpclient: connection closed")
)

// StatusError is a non-200 final response to one of our transactions.
type StatusError struct {
	Code    int
	Comment string
}

func (e *StatusError) Error() string {
	if e.Comment == "" {
		return "msrpclient: status " + strconv.Itoa(e.Code)
	}
	return "msrpclient: status " + strconv.Itoa(e.Code) + " " + e.Comment
}

// Options tune a Client. The zero value is usable.
type Options struct {
	// LocalAddr is the address to dial from ("127.0.0.2:0"); default any.
	LocalAddr string
	// LocalURI overrides the client's own URI (default
	// msrp[s]://127.0.0.1:<local port>/<random session id>;tcp).
	LocalURI string
	// FromPath overrides the From-Path of requests (default: LocalURI).
	FromPath []string
	// ResponseTimeout bounds the wait for a response after a request's
	// last byte was written. Default DefaultResponseTimeout.
	ResponseTimeout time.Duration
	// Window bounds outstanding transactions (requests waiting for a
	// response); a send blocks while it is full. Default DefaultWindow.
	Window int
	// IncomingQueue is the capacity of the Incoming channel. When it is
	// full the reader goroutine blocks, so the client stops reading the
	// connection (backpressure; responses to our own requests then wait
	// too). Default DefaultIncomingQueue.
	IncomingQueue int
	// DiscardIncoming answers and counts incoming requests (see Stats)
	// without queueing them: for load receivers nobody drains.
	DiscardIncoming bool
	// MaxBodyKeep: an incoming body up to this size is kept in
	// Received.Body; a larger one is hashed (SHA-256) and counted only.
	// Default DefaultMaxBodyKeep.
	MaxBodyKeep int64
	// DisableAutoReport stops the success REPORTs otherwise sent for
	// complete messages whose SEND asked for Success-Report: yes
	// (see also SetAutoReport).
	DisableAutoReport bool
	// Limits for the frame reader (zero fields: msrp.DefaultLimits()).
	Limits msrp.Limits
	// ReadBufferSize of the connection's bufio.Reader. Default DefaultReadBufferSize.
	ReadBufferSize int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.IncomingQueue <= 0 {
		o.IncomingQueue = DefaultIncomingQueue
	}
	if o.MaxBodyKeep <= 0 {
		o.MaxBodyKeep = DefaultMaxBodyKeep
	}
	if o.ReadBufferSize <= 0 {
		o.ReadBufferSize = DefaultReadBufferSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats are counters of a Client.
type Stats struct {
	UnknownResponses int64 // responses matching no open transaction (dropped)
	RequestsReceived int64 // incoming requests of any method
	SendsReceived    int64 // incoming SEND requests
	BodyBytes        int64 // incoming body bytes
	ReportsSent      int64 // success REPORTs sent automatically
}

// Client is one MSRP connection. Its methods are safe for concurrent use.
type Client struct {
	conn     net.Conn
	opts     Options
	log      *slog.Logger
	localURI string
	fromPath string

	wmu sync.Mutex // serialises frames on the connection
	w   *msrp.Writer

	pmu     sync.Mutex
	pending map[string]*txn
	dead    error // set once the connection is unusable; new transactions fail with it

	sem        chan struct{} // window slots
	incoming   chan *Received
	done       chan struct{} // closed by Close
	readerDone chan struct{} // closed when the reader goroutine returns
	closeOnce  sync.Once

	autoReport atomic.Bool
	unknown    atomic.Int64
	reqs       atomic.Int64
	sends      atomic.Int64
	bodyBytes  atomic.Int64
	reports    atomic.Int64
}

// Dial connects to addr (host:port) over TCP, or TLS when tlsConf is not
// nil, with default Options.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Client, error) {
	return DialOptions(ctx, addr, tlsConf, Options{})
}

// DialOptions is Dial with Options.
func DialOptions(ctx context.Context, addr string, tlsConf *tls.Config, opts Options) (*Client, error) {
	var conn net.Conn
	var err error
	var nd net.Dialer
	if opts.LocalAddr != "" {
		la, err := net.ResolveTCPAddr("tcp", opts.LocalAddr)
		if err != nil {
			return nil, fmt.Errorf("msrpclient: local address: %w", err)
		}
		nd.LocalAddr = la
	}
	if tlsConf != nil {
		d := tls.Dialer{NetDialer: &nd, Config: tlsConf}
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("msrpclient: dial %s: %w", addr, err)
	}
	return New(conn, tlsConf != nil, opts), nil
}

// New wraps an established connection (e.g. one end of net.Pipe) and starts
// its reader goroutine. secure selects the msrps scheme for LocalURI.
func New(conn net.Conn, secure bool, opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		conn:       conn,
		opts:       opts,
		log:        opts.Logger,
		w:          msrp.NewWriter(conn),
		pending:    make(map[string]*txn),
		sem:        make(chan struct{}, opts.Window),
		incoming:   make(chan *Received, opts.IncomingQueue),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.autoReport.Store(!opts.DisableAutoReport)
	c.localURI = opts.LocalURI
	if c.localURI == "" {
		port := 0
		if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
			port = a.Port
		}
		u := msrp.URI{Secure: secure, Host: "127.0.0.1", Port: port,
			SessionID: string(msrp.AppendTransactID(nil)), Transport: "tcp"}
		c.localURI = u.String()
	}
	if len(opts.FromPath) > 0 {
		c.fromPath = strings.Join(opts.FromPath, " ")
	} else {
		c.fromPath = c.localURI
	}
	go c.readLoop()
	return c
}

// LocalURI returns the client's own MSRP URI.
func (c *Client) LocalURI() string { return c.localURI }

// FromPath returns the From-Path the client puts in its requests.
func (c *Client) FromPath() string { return c.fromPath }

// Incoming delivers incoming requests (SEND, REPORT, NICKNAME, any method)
// in arrival order; it is closed when the reader goroutine stops. Its
// capacity is Options.IncomingQueue: when it is full the reader blocks and
// stops reading the connection (backpressure), which also delays responses
// to our own requests. Nothing is delivered with Options.DiscardIncoming.
func (c *Client) Incoming() <-chan *Received { return c.incoming }

// Done is closed when the reader goroutine has stopped (connection closed
// or broken); Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.readerDone }

// Err returns why the connection became unusable, or nil while it works.
func (c *Client) Err() error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return c.dead
}

// SetAutoReport switches the automatic success REPORTs on or off.
func (c *Client) SetAutoReport(on bool) { c.autoReport.Store(on) }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		UnknownResponses: c.unknown.Load(),
		RequestsReceived: c.reqs.Load(),
		SendsReceived:    c.sends.Load(),
		BodyBytes:        c.bodyBytes.Load(),
		ReportsSent:      c.reports.Load(),
	}
}

// Close closes the connection, waits for the reader goroutine to stop and
// fails all open transactions with ErrClosed.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.done)
		err = c.conn.Close()
		<-c.readerDone
		c.failAll(ErrClosed)
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	if err != nil {
		return fmt.Errorf("msrpclient: close: %w", err)
	}
	return nil
}

// response is a response to one of our transactions.
type response struct {
	code    int
	comment string
	headers []Header
	at      time.Time
}

func (r *response) get(name string) (string, bool) {
	for _, h := range r.headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// txn is an open transaction: registered before its frame is written,
// completed exactly once by whoever removes it from pending.
type txn struct {
	tid    string
	hdrs   bool // copy the response's header fields (AUTH needs them; SEND does not)
	timer  *time.Timer
	sent   time.Time
	onDone func(r *response, sent time.Time, err error)
}

// acquire takes a window slot, blocking while the window is full.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("msrpclient: waiting for a window slot: %w", ctx.Err())
	case <-c.readerDone:
		return c.deadErr()
	}
}

func (c *Client) release() { <-c.sem }

func (c *Client) deadErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// register opens a transaction (the caller holds a window slot, which
// completion releases).
func (c *Client) register(tid string, hdrs bool, onDone func(*response, time.Time, error)) error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.dead != nil {
		return c.dead
	}
	c.pending[tid] = &txn{tid: tid, hdrs: hdrs, onDone: onDone}
	return nil
}

// arm starts the response timer once the request's last byte is written.
func (c *Client) arm(tid string, sent time.Time) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	t, ok := c.pending[tid]
	if !ok {
		return // already completed
	}
	t.sent = sent
	t.timer = time.AfterFunc(c.opts.ResponseTimeout, func() {
		c.finish(tid, nil, fmt.Errorf("msrpclient: transaction %s: %w", tid, ErrTimeout))
	})
}

// finish completes transaction tid if it is still open.
func (c *Client) finish(tid string, r *response, err error) bool {
	c.pmu.Lock()
	t, ok := c.pending[tid]
	if ok {
		delete(c.pending, tid)
		if t.timer != nil {
			t.timer.Stop()
		}
	}
	c.pmu.Unlock()
	if !ok {
		return false
	}
	c.release()
	t.onDone(r, t.sent, err)
	return true
}

// failAll marks the connection dead and fails every open transaction.
func (c *Client) failAll(err error) {
	c.pmu.Lock()
	if c.dead == nil {
		c.dead = err
	}
	open := make([]string, 0, len(c.pending))
	for tid := range c.pending {
		open = append(open, tid)
	}
	c.pmu.Unlock()
	for _, tid := range open {
		c.finish(tid, nil, fmt.Errorf("msrpclient: transaction %s: %w", tid, err))
	}
}

// roundTrip runs one request transaction: write (under the write lock)
// and wait for its response.
func (c *Client) roundTrip(ctx context.Context, tid string, write func(w *msrp.Writer) error) (*response, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	type result struct {
		r   *response
		err error
	}
	ch := make(chan result, 1)
	if err := c.register(tid, true, func(r *response, _ time.Time, err error) { ch <- result{r, err} }); err != nil {
		c.release()
		return nil, err
	}
	if err := c.writeFrame(write); err != nil {
		c.finish(tid, nil, err)
	} else {
		c.arm(tid, time.Now())
	}
	select {
	case res := <-ch:
		return res.r, res.err
	case <-ctx.Done():
		c.finish(tid, nil, ctx.Err())
		res := <-ch // finish by us or by the reader: either way it was sent
		if res.err == nil {
			return res.r, nil
		}
		return nil, fmt.Errorf("msrpclient: transaction %s: %w", tid, ctx.Err())
	}
}

// writeFrame writes one frame under the write lock. A failed write breaks
// the connection (a partial frame cannot be recovered).
func (c *Client) writeFrame(write func(w *msrp.Writer) error) error {
	c.wmu.Lock()
	err := write(c.w)
	c.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("msrpclient: write: %w", err)
		c.failAll(err)
		_ = c.conn.Close() // stops the reader too
	}
	return err
}

// readLoop is the reader goroutine: it owns the msrp.Reader and stops when
// the connection is closed or breaks.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	defer close(c.incoming)
	r := msrp.NewReader(bufio.NewReaderSize(c.conn, c.opts.ReadBufferSize), c.opts.Limits)
	for {
		f, err := r.ReadFrame()
		if err == nil {
			if f.IsRequest() {
				err = c.handleRequest(f)
			} else {
				c.handleResponse(f)
			}
		}
		if err != nil {
			select {
			case <-c.done:
				err = ErrClosed
			default:
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%w by peer", ErrClosed)
				} else {
					err = fmt.Errorf("msrpclient: read: %w", err)
					c.log.Debug("msrpclient: reader stops", "err", err)
				}
			}
			c.failAll(err)
			_ = c.conn.Close()
			return
		}
	}
}

func (c *Client) handleResponse(f *msrp.Frame) {
	now := time.Now()
	c.pmu.Lock()
	t, ok := c.pending[string(f.TransactID)]
	hdrs := ok && t.hdrs
	c.pmu.Unlock()
	if !ok {
		c.unknown.Add(1)
		return
	}
	r := &response{code: f.StatusCode, comment: string(f.Comment), at: now}
	if hdrs {
		r.headers = copyHeaders(f)
	}
	if !c.finish(string(f.TransactID), r, nil) {
		c.unknown.Add(1) // timed out meanwhile
	}
}

func copyHeaders(f *msrp.Frame) []Header {
	hs := make([]Header, len(f.Headers))
	for i, h := range f.Headers {
		hs[i] = Header{Name: string(h.Name), Value: string(h.Value)}
	}
	return hs
}
