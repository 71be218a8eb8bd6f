// Package load drives an MSRP relay with pairs of msrpclient endpoints and
// measures it: the core of cmd/msrpload, callable from Go benchmarks.
package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Options configure a Run.
type Options struct {
	RelayURI string      // the relay's URI, used as AUTH To-Path (msrp:// or msrps://)
	Addr     string      // host:port to dial; default from RelayURI
	TLS      *tls.Config // required for msrps://
	User     string
	Password string
	Pairs    int // client pairs (default 1)
	Window   int // outstanding SEND transactions per pair (default 32)
	Size     int // body bytes per message (default 100)
	Chunk    int // chunk size; 0 = one chunk per message
	// Count bounds the messages per pair; Duration bounds the run. At
	// least one applies: with neither, Duration is 10 s.
	Count    int
	Duration time.Duration
	// ResponseTimeout per transaction (default msrpclient's 30 s).
	ResponseTimeout time.Duration
	Logger          *slog.Logger
}

// Report is what a Run measured.
type Report struct {
	Pairs         int              `json:"pairs"`
	Window        int              `json:"window"`
	BodyBytes     int              `json:"body_bytes"`
	ChunkBytes    int              `json:"chunk_bytes"`
	Seconds       float64          `json:"seconds"`
	Messages      int64            `json:"messages"`      // messages whose every chunk got 200
	Frames        int64            `json:"send_frames"`   // SEND transactions answered 200
	PayloadBytes  int64            `json:"payload_bytes"` // body bytes in those
	FramesPerSec  float64          `json:"send_frames_per_sec"`
	MBPerSec      float64          `json:"mb_per_sec"` // payload, 10^6 bytes/s
	LatencyP50    time.Duration    `json:"latency_p50_ns"`
	LatencyP99    time.Duration    `json:"latency_p99_ns"`
	LatencyMax    time.Duration    `json:"latency_max_ns"`
	ReceivedSends int64            `json:"received_sends"` // SEND frames the B sides got (after up to 2 s of draining)
	ReceivedBytes int64            `json:"received_bytes"`
	Unknown       int64            `json:"unknown_responses"`
	Errors        map[string]int64 `json:"errors"`
}

// Summary is the final plain line.
func (r Report) Summary() string {
	var errs []string
	for k, v := range r.Errors {
		errs = append(errs, fmt.Sprintf("%s=%d", k, v))
	}
	e := "none"
	if len(errs) > 0 {
		e = strings.Join(errs, ",")
	}
	return fmt.Sprintf("msrpload: %d pairs window %d size %d: %d SEND in %.2fs = %.0f SEND/s, %.2f MB/s, 200 latency p50 %v p99 %v, received at B %d, errors %s",
		r.Pairs, r.Window, r.BodyBytes, r.Frames, r.Seconds, r.FramesPerSec, r.MBPerSec,
		r.LatencyP50.Round(time.Microsecond), r.LatencyP99.Round(time.Microsecond), r.ReceivedSends, e)
}

func (o Options) withDefaults() (Options, error) {
	if o.RelayURI == "" {
		return o, errors.New("load: no relay URI")
	}
	u, err := msrp.ParseURI(o.RelayURI)
	if err != nil {
		return o, fmt.Errorf("load: relay URI: %w", err)
	}
	if o.Addr == "" {
		if u.Port == 0 {
			u.Port = 2855
		}
		o.Addr = net.JoinHostPort(u.Host, fmt.Sprint(u.Port))
	}
	if u.Secure && o.TLS == nil {
		return o, errors.New("load: msrps:// relay needs a TLS config")
	}
	if !u.Secure {
		o.TLS = nil
	}
	if o.Pairs <= 0 {
		o.Pairs = 1
	}
	if o.Window <= 0 {
		o.Window = 32
	}
	if o.Size < 0 {
		o.Size = 0
	}
	if o.Count <= 0 && o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Run authenticates Pairs pairs of clients at the relay and has each A
// SEND to its B (To-Path: A's Use-Path, B's Use-Path, B's URI; Failure-Report
// yes) as fast as the window allows, until Count messages per pair are
// answered, Duration passes or ctx ends. Setup failures are returned as an
// error; failures during the run are counted in Report.Errors.
func Run(ctx context.Context, opts Options) (Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Report{}, err
	}
	rep := Report{Pairs: opts.Pairs, Window: opts.Window, BodyBytes: opts.Size, ChunkBytes: opts.Chunk, Errors: map[string]int64{}}

	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	pairs := make([]*pair, 0, opts.Pairs)
	defer func() {
		for _, p := range pairs {
			p.close()
		}
	}()
	for i := 0; i < opts.Pairs; i++ {
		p, err := newPair(setupCtx, opts)
		if err != nil {
			return rep, fmt.Errorf("load: pair %d: %w", i, err)
		}
		pairs = append(pairs, p)
	}

	runCtx := ctx
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	body := make([]byte, opts.Size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(runCtx, opts, body)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	drain(ctx, pairs)

	var h histogram
	for _, p := range pairs {
		rep.Messages += p.messages
		rep.Frames += p.frames
		rep.PayloadBytes += p.bytes
		for k, v := range p.errors {
			rep.Errors[k] += v
		}
		h.merge(&p.hist)
		st := p.b.Stats()
		rep.ReceivedSends += st.SendsReceived
		rep.ReceivedBytes += st.BodyBytes
		rep.Unknown += p.a.Stats().UnknownResponses
		if p.b.Err() != nil {
			rep.Errors["receiver-conn-closed"]++ // e.g. a relay that drops instead of queueing
		}
		if p.a.Err() != nil {
			rep.Errors["sender-conn-closed"]++
		}
	}
	rep.Seconds = elapsed.Seconds()
	if rep.Seconds > 0 {
		rep.FramesPerSec = float64(rep.Frames) / rep.Seconds
		rep.MBPerSec = float64(rep.PayloadBytes) / rep.Seconds / 1e6
	}
	rep.LatencyP50 = h.quantile(0.50)
	rep.LatencyP99 = h.quantile(0.99)
	rep.LatencyMax = h.max
	return rep, nil
}

// drain waits (at most 2 s) until every B has received as many SEND frames
// as its A got 200s for: a relay may answer a hop before it forwards.
func drain(ctx context.Context, pairs []*pair) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		behind := false
		for _, p := range pairs {
			if p.b.Stats().SendsReceived < p.frames {
				behind = true
			}
		}
		if !behind {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type pair struct {
	a, b   *msrpclient.Client
	toPath []string

	// written by run, read after it returns
	messages, frames, bytes int64
	errors                  map[string]int64
	hist                    histogram
}

func newPair(ctx context.Context, opts Options) (*pair, error) {
	p := &pair{errors: map[string]int64{}}
	var err error
	aOpts := msrpclient.Options{Window: opts.Window, ResponseTimeout: opts.ResponseTimeout, Logger: opts.Logger}
	bOpts := aOpts
	bOpts.DiscardIncoming = true
	if p.a, err = msrpclient.DialOptions(ctx, opts.Addr, opts.TLS, aOpts); err != nil {
		return nil, err
	}
	if p.b, err = msrpclient.DialOptions(ctx, opts.Addr, opts.TLS, bOpts); err != nil {
		p.close()
		return nil, err
	}
	useA, _, err := p.a.Auth(ctx, opts.RelayURI, opts.User, opts.Password, 0)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("A: %w", err)
	}
	useB, _, err := p.b.Auth(ctx, opts.RelayURI, opts.User, opts.Password, 0)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("B: %w", err)
	}
	p.toPath = append(append(strings.Fields(useA), strings.Fields(useB)...), p.b.LocalURI())
	return p, nil
}

func (p *pair) close() {
	if p.a != nil {
		_ = p.a.Close()
	}
	if p.b != nil {
		_ = p.b.Close()
	}
}

// run sends until ctx ends or Count messages went out, then collects the
// outstanding results. The sender (this goroutine) and one collector
// goroutine are joined by a queue bounded by the window: the sender blocks
// when it is full (and SendAsync blocks on the client's window anyway).
func (p *pair) run(ctx context.Context, opts Options, body []byte) {
	queue := make(chan *msrpclient.Pending, opts.Window)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for pend := range queue {
			<-pend.Done()
			res, err := pend.Result()
			p.record(res, err)
		}
	}()
	msg := msrpclient.Message{ContentType: "text/plain", Body: body, ChunkSize: opts.Chunk, FailureReport: "yes"}
	for n := 0; opts.Count <= 0 || n < opts.Count; n++ {
		if ctx.Err() != nil {
			break
		}
		pend, err := p.a.SendAsync(ctx, p.toPath, msg)
		if pend != nil {
			queue <- pend
		} else if err != nil {
			p.recordErr(err)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			if p.a.Err() != nil {
				break // the connection is gone
			}
		}
	}
	close(queue)
	<-collected
}

// record runs on the collector goroutine only.
func (p *pair) record(res *msrpclient.Result, err error) {
	ok := true
	for _, ch := range res.Chunks {
		if ch.Code == 200 {
			p.frames++
			p.bytes += ch.ByteRange.End - ch.ByteRange.Start + 1
			p.hist.add(ch.RTT)
		} else {
			ok = false
		}
	}
	if err != nil {
		p.recordErr(err)
		ok = false
	}
	if ok {
		p.messages++
	}
}

func (p *pair) recordErr(err error) {
	var se *msrpclient.StatusError
	switch {
	case errors.As(err, &se):
		p.errors[fmt.Sprintf("status-%d", se.Code)]++
	case errors.Is(err, msrpclient.ErrTimeout):
		p.errors["timeout"]++
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// the run's end while waiting for a window slot: not an error
	case errors.Is(err, msrpclient.ErrClosed):
		p.errors["closed"]++
	default:
		p.errors["other"]++
	}
}

// histogram is a log-linear latency histogram: 16 sub-buckets per power of
// two (about 6% resolution), fixed size whatever the sample count.
type histogram struct {
	counts [64 * 16]int64
	n      int64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 16 {
		return int(v)
	}
	e := bits.Len64(v) - 5 // keep the top 5 bits: 1xxxx
	return (e+1)*16 + int(v>>uint(e)&15)
}

func bucketValue(b int) time.Duration {
	if b < 16 {
		return time.Duration(b)
	}
	e := b/16 - 1
	return time.Duration((uint64(16+b%16) << uint(e)) + (1<<uint(e))/2)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(b), h.max)
		}
	}
	return h.max
}
