package tracer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/pcap"
)

func checkSink(sc SinkConfig) error {
	switch sc.Type {
	case "hep":
		if sc.Addr == "" {
			return cfgErr("hep sink needs addr")
		}
		switch strings.ToLower(sc.Transport) {
		case "", "udp", "tcp", "tls":
		default:
			return cfgErr("hep transport must be udp, tcp or tls, not %q", sc.Transport)
		}
		if sc.ProtoType < 0 || sc.ProtoType > 255 {
			return cfgErr("hep proto_type must be 0-255")
		}
		switch sc.EventFormat {
		case "", "colon", "json":
		default:
			return cfgErr("hep event_format must be colon or json, not %q", sc.EventFormat)
		}
		if sc.CAFile != "" {
			if _, err := os.ReadFile(sc.CAFile); err != nil {
				return cfgErr("hep ca_file: %v", err)
			}
		}
	case "pcap":
	default:
		return cfgErr("sink type must be hep or pcap, not %q", sc.Type)
	}
	return nil
}

func openSink(ctx context.Context, name string, sc SinkConfig, log *slog.Logger) (sink, error) {
	if err := checkSink(sc); err != nil {
		return nil, err
	}
	queue := sc.Queue
	if queue <= 0 {
		queue = defaultQueue
	}
	switch sc.Type {
	case "hep":
		return openHEP(ctx, name, sc, queue, log)
	default:
		return openPcap(name, sc, queue, log)
	}
}

// hepSink encodes each record into a HEP packet at once and hands it to
// the collector client's bounded queue (hep.Client never blocks).
type hepSink struct {
	name   string
	client *hep.Client
	failed atomic.Uint64 // records that could not be encoded
}

func openHEP(ctx context.Context, name string, sc SinkConfig, queue int, log *slog.Logger) (*hepSink, error) {
	cc := hep.ClientConfig{
		Name:      name,
		Transport: hep.Transport(strings.ToLower(sc.Transport)),
		Addr:      sc.Addr,
		QueueSize: queue,
		NoGSO:     sc.UDPGSO != nil && !*sc.UDPGSO,
		Logger:    log.With(slog.String("sink", name)),
		Profile: hep.Profile{
			ProtoType:     uint8(sc.ProtoType),
			CaptureID:     sc.CaptureID,
			AuthKey:       []byte(sc.AuthKey),
			NodeName:      []byte(sc.Node),
			FrameLimit:    sc.FrameLimit,
			MaxPacketSize: sc.MaxPacket,
		},
	}
	if cc.Transport == "" {
		cc.Transport = hep.UDP
	}
	if sc.EventFormat == "json" {
		cc.Profile.EventForm = hep.FormJSON
	}
	if cc.Transport == hep.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: sc.InsecureSkipVerify}
		if sc.CAFile != "" {
			pem, err := os.ReadFile(sc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, cfgErr("ca_file %s: no PEM certificate", sc.CAFile)
			}
			tc.RootCAs = pool
		}
		cc.TLSConfig = tc
	}
	c, err := hep.NewClient(ctx, cc)
	if err != nil {
		return nil, err
	}
	return &hepSink{name: name, client: c}, nil
}

// endpoints returns a HEP packet's source and destination: for a frame,
// sender → receiver; for a connection event, initiator → acceptor (the
// TCP SYN's direction, research T5). An unknown end (a connect-start to a
// name, the local end before connect) is the unspecified address of the
// other end's family, never a made-up one (research T4).
func endpoints(e *event.Event) (src, dst netip.AddrPort) {
	c := &e.Conn
	in := c.Dir == event.DirIn
	if e.Frame != nil {
		in = e.Frame.Dir == event.DirIn
	}
	local, remote := c.Local, c.Remote
	switch {
	case !local.IsValid() && remote.IsValid():
		local = netip.AddrPortFrom(unspecified(remote.Addr()), 0)
	case !remote.IsValid() && local.IsValid():
		remote = netip.AddrPortFrom(unspecified(local.Addr()), 0)
	case !remote.IsValid() && !local.IsValid():
		local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		remote = local
	}
	if in {
		return remote, local
	}
	return local, remote
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// correlationID appends the HEP correlation id: the MSRP session id for a
// frame of a session (both directions share it: one chat groups together in
// Homer), "conn-<id>" otherwise. Never empty (heplify-server drops such).
func correlationID(dst []byte, e *event.Event) []byte {
	if e.Frame != nil && e.Frame.SessionID != "" {
		return append(dst, e.Frame.SessionID...)
	}
	dst = append(dst, "conn-"...)
	return strconv.AppendUint(dst, e.Conn.ID, 10)
}

func (h *hepSink) put(e *event.Event) {
	var cidBuf [64]byte
	m := hep.Meta{Time: e.Time, CorrelationID: correlationID(cidBuf[:0], e)}
	m.Src, m.Dst = endpoints(e)
	if f := e.Frame; f != nil {
		buf := framePool.Get().(*[]byte)
		*buf = appendTraceFrame((*buf)[:0], f)
		h.client.SendFrame(m, *buf)
		framePool.Put(buf)
		return
	}
	var extra [2]hep.Attr
	h.client.SendEvent(m, hepEvent(e, extra[:0]))
}

// hepEvent renders a connection event in OpenSIPS "net" shape with the
// real protocol label (research T2).
func hepEvent(e *event.Event, extra []hep.Attr) hep.Event {
	ev := hep.Event{Protocol: hep.ProtocolMSRP, Status: hep.StatusSuccess}
	if e.Conn.Transport == "msrps" {
		ev.Protocol = hep.ProtocolMSRPS
	}
	switch e.Kind {
	case event.Accepted:
		ev.Name, ev.Message = hep.EventAccepted, "Connection accepted"
	case event.ConnectStart:
		ev.Name, ev.Message = hep.EventConnectStart, "Connecting"
	case event.Connected:
		ev.Name, ev.Message = hep.EventConnected, "Successfully connected"
	case event.ConnectFailed:
		ev.Name, ev.Status, ev.Message = hep.EventConnectFailed, hep.StatusFailure, errText(e.Err, "Connect failed")
	case event.TLSHandshake:
		ev.Name = hep.EventTLSHandshake
		if e.TLS != nil && e.TLS.OK {
			ev.Message = "TLS handshake done: " + e.TLS.Version + " " + e.TLS.CipherSuite
		} else {
			ev.Status, ev.Message = hep.StatusFailure, errText(e.Err, "TLS handshake failed")
		}
		if e.TLS != nil && e.TLS.PeerSubject != "" {
			subj, iss := hep.AttrServerSubject, hep.AttrServerIssuer
			if e.Conn.Dir == event.DirIn {
				subj, iss = hep.AttrClientSubject, hep.AttrClientIssuer
			}
			ev.Extra = append(extra, hep.Attr{Key: subj, Value: e.TLS.PeerSubject}, hep.Attr{Key: iss, Value: e.TLS.PeerIssuer})
		}
	case event.Closed:
		ev.Name, ev.Message = hep.EventClosed, "Connection closed: "+e.Reason.String()
		switch e.Reason {
		case event.CloseEOF, event.CloseShutdown:
		default:
			ev.Status = hep.StatusFailure
		}
		if e.Err != nil {
			ev.Message += ": " + e.Err.Error()
		}
	default:
		ev.Name = strings.ToUpper(e.Kind.String())
	}
	return ev
}

func errText(err error, def string) string {
	if err == nil {
		return def
	}
	return err.Error()
}

func (h *hepSink) stats() SinkStats {
	st := h.client.Stats()
	return SinkStats{Name: h.name, Type: "hep", Sent: st.Sent, Dropped: st.Dropped + h.failed.Load(), Errors: st.Errors}
}

func (h *hepSink) close() error { return h.client.Close() }

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 18<<10); return &b }}

// appendTraceFrame appends the frame as traced: its wire bytes, or, when
// the relay captured only the beginning (Size > len(Wire)), that beginning,
// a line saying how much is missing, and the frame's end-line, so that what
// Homer and Wireshark get is still one well-formed MSRP frame.
func appendTraceFrame(dst []byte, f *event.FrameInfo) []byte {
	if int64(len(f.Wire)) >= f.Size {
		return append(dst, f.Wire...)
	}
	dst = append(dst, f.Wire...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, hep.TruncationMarker...)
	dst = strconv.AppendInt(dst, f.Size-int64(len(f.Wire)), 10)
	dst = append(dst, " of "...)
	dst = strconv.AppendInt(dst, f.Size, 10)
	dst = append(dst, " bytes omitted]\r\n-------"...)
	dst = append(dst, f.TransactID...)
	flag := f.Flag
	if flag == 0 {
		flag = '#'
	}
	return append(dst, flag, '\r', '\n')
}

// pcapSink writes to rotating pcap files from its own goroutine, fed by a
// bounded queue: file I/O never runs on the relay's path.
type pcapSink struct {
	name    string
	w       *pcap.Writer
	queue   chan *pcapRec
	done    chan struct{}
	closed  atomic.Bool
	mu      sync.RWMutex // put holds it shared; close exclusively, before closing queue
	dropped atomic.Uint64
	written atomic.Uint64
	errs    atomic.Uint64
	log     *slog.Logger
}

type pcapRec struct {
	kind     event.Kind
	t        time.Time
	src, dst netip.AddrPort // frame: sender → receiver; connection: initiator → acceptor
	data     []byte
}

var pcapRecPool = sync.Pool{New: func() any { return &pcapRec{data: make([]byte, 0, 1024)} }}

func openPcap(name string, sc SinkConfig, queue int, log *slog.Logger) (*pcapSink, error) {
	dir := sc.Dir
	if dir == "" {
		dir = "."
	}
	w, err := pcap.Open(pcap.Config{Dir: dir, Prefix: sc.Prefix, MaxFileBytes: sc.MaxFileBytes,
		MaxFileAge: sc.MaxFileAge, MaxTotalBytes: sc.MaxTotalBytes})
	if err != nil {
		return nil, err
	}
	p := &pcapSink{name: name, w: w, queue: make(chan *pcapRec, queue), done: make(chan struct{}),
		log: log.With(slog.String("sink", name))}
	go p.run()
	return p, nil
}

func (p *pcapSink) put(e *event.Event) {
	switch e.Kind {
	case event.Accepted, event.Connected, event.Closed, event.FrameIn, event.FrameOut:
	default:
		return // pcap shows TCP streams: only their opening, data and closing
	}
	if e.Kind == event.Closed && !e.Conn.Local.IsValid() {
		return
	}
	r := pcapRecPool.Get().(*pcapRec)
	r.kind, r.t = e.Kind, e.Time
	r.src, r.dst = endpoints(e)
	r.data = r.data[:0]
	if e.Frame != nil {
		r.data = appendTraceFrame(r.data, e.Frame)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		p.dropped.Add(1)
		pcapRecPool.Put(r)
		return
	}
	select {
	case p.queue <- r:
	default:
		p.dropped.Add(1)
		pcapRecPool.Put(r)
	}
}

func (p *pcapSink) run() {
	defer close(p.done)
	for r := range p.queue {
		var err error
		switch r.kind {
		case event.Accepted, event.Connected:
			err = p.w.ConnOpen(r.t, r.src, r.dst)
		case event.Closed:
			err = p.w.ConnClose(r.t, r.src, r.dst)
		default:
			err = p.w.Data(r.t, r.src, r.dst, r.data)
		}
		if err != nil {
			if p.errs.Add(1) == 1 {
				p.log.Warn("pcap write failed", slog.String("error", err.Error()))
			}
		} else {
			p.written.Add(1)
		}
		if cap(r.data) <= 64<<10 {
			pcapRecPool.Put(r)
		}
		if len(p.queue) == 0 {
			// Idle: make what was written visible to readers of the file.
			if err := p.w.Flush(); err != nil {
				p.errs.Add(1)
			}
		}
	}
}

func (p *pcapSink) stats() SinkStats {
	return SinkStats{Name: p.name, Type: "pcap", Sent: p.written.Load(), Dropped: p.dropped.Load(), Errors: p.errs.Load()}
}

func (p *pcapSink) close() error {
	p.mu.Lock()
	if p.closed.Swap(true) {
		p.mu.Unlock()
		return nil
	}
	close(p.queue)
	p.mu.Unlock()
	<-p.done
	return p.w.Close()
}
