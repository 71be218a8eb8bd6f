package metrics

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/msrpscope/msrpscope/tracer/event"
)

// Observer records metrics from the relay's events. It implements
// event.Observer and has no Enabled method: it wants every frame's metadata
// (never its Wire bytes) whether tracing is on or off. Observe allocates
// nothing: every attribute set is built once in newObserver.
//
// The per-frame counters (frames, bytes, responses) are plain atomics that
// observable counters read at collection: an SDK counter's Add costs a few
// hundred nanoseconds (attribute resolution, a map lookup, a lock), four
// to eight times per relayed SEND. The latency histograms are recorded
// from event.FrameInfo.Paired: the relay knows which frames pair.
type Observer struct {
	connsOpen     metric.Int64UpDownCounter
	connsOpened   metric.Int64Counter
	connsClosed   metric.Int64Counter
	connectFailed metric.Int64Counter
	tlsHandshakes metric.Int64Counter
	limitHits     metric.Int64Counter
	authResults   metric.Int64Counter

	// Prebuilt options, indexed as the names say.
	dirTransport [3][nTransport][]metric.AddOption // [dir][transport]
	closed       [3][nReason][]metric.AddOption    // [dir][reason]
	transport    [nTransport][]metric.AddOption    // connect failures
	tlsResult    [3][2][]metric.AddOption          // [dir][ok]
	limit        [nReason][]metric.AddOption       // nil where the reason is no limit
	authDir      [nAuth][3][]metric.AddOption      // [result][dir]

	// The latency histograms (histogram.go).
	relayLatency     [nMethod]*histSeries // by method
	sendResponseTime *histSeries

	// Per-frame counts, read by the observable counters' callbacks.
	frameCount    [nMethod][3]paddedInt64 // [method][dir]
	frameBytes    [nMethod][3]paddedInt64 // [method][dir]
	responseCount [nClass][3]paddedInt64  // [class][dir]
	methodDirSet  [nMethod][3]metric.ObserveOption
	classDirSet   [nClass][3]metric.ObserveOption
}

// paddedInt64 is an atomic counter on its own cache line: the relay's
// goroutines on several cores add to neighbouring counters.
type paddedInt64 struct {
	atomic.Int64
	_ [56]byte
}

var bg = context.Background()

const (
	mSEND = iota
	mREPORT
	mAUTH
	mNICKNAME
	mOther
	mResponse
	nMethod
)

var methodNames = [nMethod]string{"SEND", "REPORT", "AUTH", "NICKNAME", "other", "response"}

// methodIndex maps a request method to its label; it does not allocate
// (a string(b) conversion in a switch is compared in place).
func methodIndex(m []byte) int {
	switch string(m) {
	case "SEND":
		return mSEND
	case "REPORT":
		return mREPORT
	case "AUTH":
		return mAUTH
	case "NICKNAME":
		return mNICKNAME
	}
	return mOther
}

const (
	tMSRP = iota
	tMSRPS
	tOther
	nTransport
)

var transportNames = [nTransport]string{"msrp", "msrps", "other"}

func transportIndex(t string) int {
	switch t {
	case "msrp":
		return tMSRP
	case "msrps":
		return tMSRPS
	}
	return tOther
}

// Close reasons: event's values 1..CloseAdmin, 0 and anything newer is
// "unknown" (index 0).
const nReason = int(event.CloseAdmin) + 1 // the last CloseReason

func reasonIndex(r event.CloseReason) int {
	if int(r) < nReason {
		return int(r)
	}
	return 0
}

// Status classes: 1xx..5xx by hundreds, anything else "other" (index 0).
const nClass = 6

var classNames = [nClass]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func classIndex(status int) int {
	if c := status / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}

// AUTH results (RFC 4976 §5: 200 grants a session, 401 challenges, 403
// refuses, 423 asks for another Expires).
const (
	aOK = iota
	aChallenge
	aForbidden
	aIntervalOutOfBounds
	aError
	nAuth
)

var authNames = [nAuth]string{"ok", "challenge", "forbidden", "interval-out-of-bounds", "error"}

func authIndex(status int) int {
	switch status {
	case 200:
		return aOK
	case 401:
		return aChallenge
	case 403:
		return aForbidden
	case 423:
		return aIntervalOutOfBounds
	}
	return aError
}

func dirName(d event.Direction) string { return d.String() }

func dirIndex(d event.Direction) int {
	if d == event.DirOut {
		return int(event.DirOut)
	}
	return int(event.DirIn)
}

func addOpt(kvs ...attribute.KeyValue) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

// newObserver makes the instruments on mt and gives the histograms to
// hists, the readers' producer.
func newObserver(mt metric.Meter, hists *histProducer) (*Observer, error) {
	o := &Observer{}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := mt.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	var err error
	o.connsOpen, err = mt.Int64UpDownCounter("msrpscope_connections_open", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections open now, by direction (in: accepted, out: dialled) and transport."))
	errs = append(errs, err)
	o.connsOpened = counter("msrpscope_connections_opened", "{connection}", "Connections accepted (in) or established (out).")
	o.connsClosed = counter("msrpscope_connections_closed", "{connection}", "Connections closed, by direction and reason.")
	o.connectFailed = counter("msrpscope_connect_failures", "{connection}", "Outbound connection attempts that failed.")
	o.tlsHandshakes = counter("msrpscope_tls_handshakes", "{handshake}", "TLS handshakes, by direction and result.")
	o.limitHits = counter("msrpscope_limit_hits", "{connection}", "Connections closed because a limit or timeout was hit, by limit.")
	observable := func(name, unit, desc string, cb metric.Int64Callback) {
		_, err := mt.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithInt64Callback(cb))
		errs = append(errs, err)
	}
	// A count still 0 is not reported, as a synchronous counter reports
	// only the attribute sets it was given.
	observable("msrpscope_frames", "{frame}", "MSRP frames, by method (\"response\" for responses) and direction.",
		func(_ context.Context, ob metric.Int64Observer) error {
			observeAll(ob, o.frameCount[:], o.methodDirSet[:])
			return nil
		})
	observable("msrpscope_frame", "By", "MSRP frame bytes on the wire, by method and direction.",
		func(_ context.Context, ob metric.Int64Observer) error {
			observeAll(ob, o.frameBytes[:], o.methodDirSet[:])
			return nil
		})
	observable("msrpscope_responses", "{response}", "MSRP responses, by status class and direction.",
		func(_ context.Context, ob metric.Int64Observer) error {
			observeAll(ob, o.responseCount[:], o.classDirSet[:])
			return nil
		})
	o.authResults = counter("msrpscope_auth_results", "{response}", "AUTH responses, by result and direction (out: this relay's decision).")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	kDir, kTransport, kReason := attribute.Key("direction"), attribute.Key("transport"), attribute.Key("reason")
	for _, d := range []event.Direction{event.DirIn, event.DirOut} {
		di := dirIndex(d)
		for t := range nTransport {
			o.dirTransport[di][t] = addOpt(kDir.String(dirName(d)), kTransport.String(transportNames[t]))
		}
		for r := range nReason {
			o.closed[di][r] = addOpt(kDir.String(dirName(d)), kReason.String(event.CloseReason(r).String()))
		}
		o.tlsResult[di][0] = addOpt(kDir.String(dirName(d)), attribute.String("result", "failed"))
		o.tlsResult[di][1] = addOpt(kDir.String(dirName(d)), attribute.String("result", "ok"))
		for m := range nMethod {
			o.methodDirSet[m][di] = metric.WithAttributeSet(attribute.NewSet(attribute.String("method", methodNames[m]), kDir.String(dirName(d))))
		}
		for c := range nClass {
			o.classDirSet[c][di] = metric.WithAttributeSet(attribute.NewSet(attribute.String("class", classNames[c]), kDir.String(dirName(d))))
		}
		for a := range nAuth {
			o.authDir[a][di] = addOpt(attribute.String("result", authNames[a]), kDir.String(dirName(d)))
		}
	}
	for t := range nTransport {
		o.transport[t] = addOpt(kTransport.String(transportNames[t]))
	}
	for _, r := range []event.CloseReason{event.CloseLimit, event.CloseIdleTimeout, event.CloseHeaderTimeout,
		event.CloseBodyTimeout, event.CloseSendTimeout} {
		o.limit[r] = addOpt(attribute.String("limit", r.String()))
	}
	relay := &histogram{name: "msrpscope_relay_latency", unit: "s",
		desc: "Request in to forwarded out on the next hop (first byte to first byte), by method."}
	for m := range nMethod {
		o.relayLatency[m] = newHistSeries(attribute.NewSet(attribute.String("method", methodNames[m])), relayBuckets)
		relay.series = append(relay.series, o.relayLatency[m])
	}
	o.sendResponseTime = newHistSeries(*attribute.EmptySet(), rttBuckets)
	hists.set([]*histogram{relay, {name: "msrpscope_send_response_time", unit: "s",
		desc: "A SEND written to the next hop until its 200 response is read.", series: []*histSeries{o.sendResponseTime}}})
	return o, nil
}

// Observe records e. It does not block and does not allocate: the
// latencies come from the times the relay pairs frames with
// (event.FrameInfo.Paired), no table of frames awaiting their pair.
func (o *Observer) Observe(e *event.Event) {
	di := dirIndex(e.Conn.Dir)
	switch e.Kind {
	case event.Accepted, event.Connected:
		opts := o.dirTransport[di][transportIndex(e.Conn.Transport)]
		o.connsOpen.Add(bg, 1, opts...)
		o.connsOpened.Add(bg, 1, opts...)
	case event.ConnectFailed:
		o.connectFailed.Add(bg, 1, o.transport[transportIndex(e.Conn.Transport)]...)
	case event.TLSHandshake:
		ok := 0
		if e.TLS != nil && e.TLS.OK && e.Err == nil {
			ok = 1
		}
		o.tlsHandshakes.Add(bg, 1, o.tlsResult[di][ok]...)
	case event.Closed:
		// The relay reports Closed only for a connection it reported as
		// Accepted or Connected, so the open gauge balances.
		o.connsOpen.Add(bg, -1, o.dirTransport[di][transportIndex(e.Conn.Transport)]...)
		ri := reasonIndex(e.Reason)
		o.connsClosed.Add(bg, 1, o.closed[di][ri]...)
		if l := o.limit[ri]; l != nil {
			o.limitHits.Add(bg, 1, l...)
		}
	case event.FrameIn, event.FrameOut:
		if e.Frame != nil {
			o.frame(e)
		}
	}
}

func (o *Observer) frame(e *event.Event) {
	f := e.Frame
	fd := dirIndex(f.Dir)
	m := mResponse
	if f.Status == 0 {
		m = methodIndex(f.Method)
	}
	o.frameCount[m][fd].Add(1)
	o.frameBytes[m][fd].Add(f.Size)
	if m == mResponse {
		o.response(e)
		return
	}
	if f.Dir == event.DirOut && !f.Paired.IsZero() {
		// A forwarded request: its relay latency runs from the request
		// read, which the relay pairs it with (first byte to first byte).
		o.relayLatency[m].record(e.Time.Sub(f.Paired))
	}
}

func (o *Observer) response(e *event.Event) {
	f := e.Frame
	fd := dirIndex(f.Dir)
	o.responseCount[classIndex(f.Status)][fd].Add(1)
	switch {
	case f.Dir == event.DirIn:
		// The next hop's answer to a SEND we wrote (RFC 4975 §7.2): the
		// relay pairs it with the time the SEND began to be written.
		if f.Status == 200 && f.Answers == "SEND" && !f.Paired.IsZero() {
			o.sendResponseTime.record(e.Time.Sub(f.Paired))
		}
	case f.Answers == "AUTH":
		// AUTH is answered here (RFC 4976 §5), or relayed back from
		// the next relay: the result as sent to the client.
		o.authResults.Add(bg, 1, o.authDir[authIndex(f.Status)][fd]...)
	}
}

// observeAll reports each non-zero count of a [n][3] table (index 0 of
// the direction is unused) with its attribute set.
func observeAll(ob metric.Int64Observer, counts [][3]paddedInt64, sets [][3]metric.ObserveOption) {
	for i := range counts {
		for d := 1; d < 3; d++ {
			if v := counts[i][d].Load(); v != 0 {
				ob.Observe(v, sets[i][d])
			}
		}
	}
}
