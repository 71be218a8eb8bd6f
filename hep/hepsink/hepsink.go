// Package hepsink is the tracer's "hep" sink kind: it encodes each traced
// record as a HEPv3 packet for one collector (Homer's heplify-server, ...).
package hepsink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/msrpscope/msrpscope/hep"
	"github.com/msrpscope/msrpscope/tracer/event"
	"github.com/msrpscope/msrpscope/tracer/sink"
	"github.com/msrpscope/msrpscope/tracer/spool"
)

// minMaxPacket is the smallest max_packet: room for the chunks, a cut
// frame's marker and end-line, and some of the frame.
const minMaxPacket = 512

// Kind is the sink kind; register it with sink.Register("hep", hepsink.Kind{}).
type Kind struct{}

// Config is a hep sink's own configuration block (besides type and queue).
type Config struct {
	Addr               string `yaml:"addr" json:"addr"`                                 // host:port
	Transport          string `yaml:"transport" json:"transport"`                       // udp (default), tcp or tls
	CaptureID          uint32 `yaml:"capture_id" json:"capture_id"`                     // chunk 0x000c
	Node               string `yaml:"node" json:"node"`                                 // chunk 0x0013 (capture agent name)
	AuthKey            string `yaml:"auth_key" json:"auth_key"`                         // chunk 0x000e
	ProtoType          int    `yaml:"proto_type" json:"proto_type"`                     // chunk 0x000b: 100 (LOG, default) or 89 (0x59, OpenSIPS "net")
	EventFormat        string `yaml:"event_format" json:"event_format"`                 // "colon" (OpenSIPS homer5 form, default) or "json"
	FrameLimit         int    `yaml:"frame_limit" json:"frame_limit"`                   // bytes of a frame kept; 0: hep.DefaultFrameLimit; < 0: only max_packet bounds
	MaxPacket          int    `yaml:"max_packet" json:"max_packet"`                     // bytes of one HEP packet; 0: hep.MaxPacketSize
	UDPGSO             *bool  `yaml:"udp_gso" json:"udp_gso"`                           // udp: send batches as GSO runs where the kernel offers it (default true)
	CAFile             string `yaml:"ca_file" json:"ca_file"`                           // tls: CA to verify the collector
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" json:"insecure_skip_verify"` // tls: do not verify (tests only)
	SpoolDir           string `yaml:"spool_dir" json:"spool_dir"`                       // tcp/tls: packets the collector cannot take go to this on-disk spool, replayed in order
	SpoolMaxBytes      int64  `yaml:"spool_max_bytes" json:"spool_max_bytes"`           // the spool's bound on disk; 0: 1 GiB
}

// Decode implements sink.Factory: it checks the keys without I/O.
func (Kind) Decode(decode func(v any) error) (any, error) {
	var c Config
	if err := decode(&c); err != nil {
		return nil, err
	}
	if c.Addr == "" {
		return nil, fmt.Errorf("hep sink needs addr")
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		return nil, fmt.Errorf("hep addr %q: want host:port", c.Addr)
	}
	c.Transport = strings.ToLower(c.Transport)
	switch c.Transport {
	case "":
		c.Transport = string(hep.UDP)
	case "udp", "tcp", "tls":
	default:
		return nil, fmt.Errorf("hep transport must be udp, tcp or tls, not %q", c.Transport)
	}
	if c.ProtoType < 0 || c.ProtoType > 255 {
		return nil, fmt.Errorf("hep proto_type must be 0-255, not %d", c.ProtoType)
	}
	switch c.EventFormat {
	case "", "colon", "json":
	default:
		return nil, fmt.Errorf("hep event_format must be colon or json, not %q", c.EventFormat)
	}
	if c.MaxPacket != 0 && (c.MaxPacket < minMaxPacket || c.MaxPacket > 65535) {
		return nil, fmt.Errorf("hep max_packet must be %d-65535, not %d", minMaxPacket, c.MaxPacket)
	}
	if c.SpoolDir != "" && c.Transport == "udp" {
		return nil, fmt.Errorf("hep spool_dir needs transport tcp or tls (UDP cannot tell that a collector is down)")
	}
	if c.SpoolMaxBytes < 0 {
		return nil, fmt.Errorf("hep spool_max_bytes must not be negative")
	}
	if c.CAFile != "" && c.Transport != "tls" {
		return nil, fmt.Errorf("hep ca_file applies to transport tls only")
	}
	return c, nil
}

// Insecure reports whether c connects over TLS without verifying the collector
// (insecure_skip_verify), which start-up and -check-config warn about.
func (c Config) Insecure() bool {
	return c.InsecureSkipVerify && strings.EqualFold(c.Transport, "tls")
}

// Open implements sink.Factory. It reads ca_file and starts the collector
// client, which connects in the background.
func (Kind) Open(ctx context.Context, cfg any, o sink.Options) (sink.Sink, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, fmt.Errorf("hep sink %q: configuration of type %T", o.Name, cfg)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc := hep.ClientConfig{
		Name:      o.Name,
		Transport: hep.Transport(c.Transport),
		Addr:      c.Addr,
		QueueSize: o.QueueSize,
		NoGSO:     c.UDPGSO != nil && !*c.UDPGSO,
		Logger:    log.With(slog.String("sink", o.Name)),
		Profile: hep.Profile{
			ProtoType:     uint8(c.ProtoType),
			CaptureID:     c.CaptureID,
			AuthKey:       []byte(c.AuthKey),
			NodeName:      []byte(c.Node),
			FrameLimit:    -1, // frames arrive cut by sink.AppendFrame: the client must not cut again
			MaxPacketSize: c.MaxPacket,
		},
	}
	if c.EventFormat == "json" {
		cc.Profile.EventForm = hep.FormJSON
	}
	if c.Insecure() {
		cc.Logger.Warn(hep.InsecureWarning+": the collector's certificate is not verified, anyone on the path can read and change the traces (tests only)",
			slog.String("addr", c.Addr))
	}
	if cc.Transport == hep.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("hep ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("hep ca_file %s: no PEM certificate", c.CAFile)
			}
			tc.RootCAs = pool
		}
		cc.TLSConfig = tc
	}
	limit := c.FrameLimit
	if limit == 0 {
		limit = hep.DefaultFrameLimit
	}
	var sp *spool.Spool
	if c.SpoolDir != "" {
		var err error
		sp, err = spool.Open(spool.Config{Dir: c.SpoolDir, MaxBytes: c.SpoolMaxBytes, Logger: cc.Logger})
		if err != nil {
			return nil, fmt.Errorf("hep spool_dir: %w", err)
		}
		cc.Spool = sp
	}
	client, err := hep.NewClient(ctx, cc)
	if err != nil {
		if sp != nil {
			_ = sp.Close()
		}
		return nil, err
	}
	return &hepSink{name: o.Name, client: client, limit: limit, spool: sp}, nil
}

// hepSink encodes each record into a HEP packet at once, on the caller's
// goroutine, and hands it to the collector client's bounded queue
// (hep.Client never blocks; what does not fit is dropped and counted there).
type hepSink struct {
	name   string
	client *hep.Client
	limit  int          // frame bytes kept; < 0: only the packet size bounds
	spool  *spool.Spool // nil without spool_dir; closed after the client
}

// Put runs on the relay's goroutine: a frame's path keeps its stack frame
// small (the event's rendering is in putEvent), as the goroutine's stack
// only grows.
func (h *hepSink) Put(e *event.Event) {
	f := e.Frame
	if f == nil {
		h.putEvent(e)
		return
	}
	var cidBuf [96]byte
	m := hep.Meta{Time: e.Time, CorrelationID: sink.AppendCorrelationID(cidBuf[:0], e)}
	m.Src, m.Dst = sink.Endpoints(e)
	// The frame is cut (sink.AppendFrame) straight into the packet, to what the
	// packet has room for and the sink's frame_limit.
	h.client.SendFrameFunc(m, func(dst []byte, room int) []byte {
		limit := room - sink.MaxFrameOverhead
		if h.limit > 0 {
			limit = min(limit, h.limit)
		}
		return sink.AppendFrame(dst, f, max(limit, 1))
	})
}

//go:noinline
func (h *hepSink) putEvent(e *event.Event) {
	var cidBuf [96]byte
	m := hep.Meta{Time: e.Time, CorrelationID: sink.AppendCorrelationID(cidBuf[:0], e)}
	m.Src, m.Dst = sink.Endpoints(e)
	var extra [2]hep.Attr
	h.client.SendEvent(m, hepEvent(e, extra[:0]))
}

// hepEvent renders a connection event in OpenSIPS "net" shape with the
// real protocol label (MSRPS for TLS, where OpenSIPS says TCP).
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

func (h *hepSink) Stats() sink.Stats {
	st := h.client.Stats()
	s := sink.Stats{Name: h.name, Type: "hep", Sent: st.Sent, Dropped: st.Dropped, Errors: st.Errors,
		Queued: st.Queued, Spooled: st.Spooled, State: sink.StateOK,
		Counters: []sink.Counter{{Name: "busy", Value: st.Busy}, {Name: "reconnects", Value: st.Reconnects}, {Name: "replayed", Value: st.Replayed},
			{Name: "segmented", Value: st.Segmented}}}
	if h.spool != nil {
		ss := h.spool.Stats()
		s.SpoolBytes = uint64(ss.Bytes)
		s.Counters = append(s.Counters, sink.Counter{Name: "spool_corrupt", Value: uint64(ss.Corrupt)},
			sink.Counter{Name: "spool_full", Value: uint64(ss.Full)})
	}
	return s
}

// Close stops the client after flushing to a connected collector as far as
// its write timeout allows; ctx bounds the wait.
func (h *hepSink) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		err := h.client.Close() // spools what it could not send
		if h.spool != nil {
			err = errors.Join(err, h.spool.Close())
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
