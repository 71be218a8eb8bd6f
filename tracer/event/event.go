// Package event is the tracing event model: what the relay reports about
// connections and frames, and the one-method Observer interface it reports to.
//
// It is a leaf package so that the relay depends on it alone (relay →
// tracer/event), never on the tracer, its filters or its sinks.
package event

import (
	"net/netip"
	"time"
)

// Observer receives every connection event and every frame the relay
// handles. Observe is called on the relay's hot path: it must not block,
// and the Event and every slice in it are valid only during the call (copy
// what you keep). The tracer implements it; with no Observer the relay
// pays one nil check per event.
//
// An Observer that also has a method Enabled() bool is asked before each
// frame: while it answers false the relay neither captures frames nor
// reports them (connection events are still reported). One that also has a
// method Wire() bool is asked too: while Wire answers false the relay
// reports the frame's metadata with FrameInfo.Wire nil and copies no wire
// bytes (metrics need no bytes; a tracer does). Without Wire the relay
// copies them whenever it reports frames.
type Observer interface {
	Observe(e *Event)
}

// Kind says what happened.
type Kind uint8

const (
	Accepted      Kind = iota + 1 // inbound connection accepted
	ConnectStart                  // outbound connection attempt begins
	Connected                     // outbound connection established (TCP; TLS follows as TLSHandshake)
	ConnectFailed                 // outbound connection attempt failed (Err)
	TLSHandshake                  // TLS handshake finished, TLS.OK says how
	Closed                        // connection closed (Reason, Err)
	FrameIn                       // a frame was read (Frame)
	FrameOut                      // a frame was written (Frame)
)

var eventNames = [...]string{
	Accepted: "accepted", ConnectStart: "connect-start", Connected: "connected",
	ConnectFailed: "connect-failed", TLSHandshake: "tls-handshake", Closed: "closed",
	FrameIn: "frame-in", FrameOut: "frame-out",
}

func (k Kind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "unknown"
}

// CloseReason says why a connection closed.
type CloseReason uint8

const (
	CloseEOF           CloseReason = iota + 1 // the peer closed
	CloseIdleTimeout                          // no frame within the idle timeout
	CloseHeaderTimeout                        // a frame's header fields did not arrive in time (slowloris)
	CloseBodyTimeout                          // a frame's body stalled
	CloseSendTimeout                          // the peer did not read what we sent in time (slow reader)
	CloseReadError                            // a read failed
	CloseWriteError                           // a write failed
	CloseProtocol                             // malformed MSRP that cannot be re-framed
	CloseLimit                                // a limit was exceeded (connections, queue, failed AUTHs)
	CloseNotForUs                             // a request not addressed to this relay (RFC 4976 §6.2)
	CloseTLSFailed                            // the TLS handshake failed
	CloseShutdown                             // the relay is shutting down
	ClosePanic                                // handling the connection panicked (a bug: recovered, logged with the stack)
	CloseAdmin                                // an operator closed it (admin API)
)

var closeNames = [...]string{
	CloseEOF: "eof", CloseIdleTimeout: "idle-timeout", CloseHeaderTimeout: "header-timeout",
	CloseBodyTimeout: "body-timeout", CloseSendTimeout: "send-timeout", CloseReadError: "read-error",
	CloseWriteError: "write-error", CloseProtocol: "protocol-error", CloseLimit: "limit",
	CloseNotForUs: "not-for-us", CloseTLSFailed: "tls-failed", CloseShutdown: "shutdown",
	ClosePanic: "internal-error", CloseAdmin: "admin-kill",
}

func (r CloseReason) String() string {
	if int(r) < len(closeNames) && closeNames[r] != "" {
		return closeNames[r]
	}
	return "unknown"
}

// Direction of a frame or connection relative to the relay.
type Direction uint8

const (
	DirIn  Direction = iota + 1 // towards the relay (received, or accepted)
	DirOut                      // from the relay (sent, or dialled)
)

func (d Direction) String() string {
	if d == DirOut {
		return "out"
	}
	return "in"
}

// ConnInfo identifies a connection; it is fixed for the connection's life.
type ConnInfo struct {
	// ID is unique per relay instance: random high 32 bits chosen at the
	// relay's start, a counter in the low 32, so ids do not repeat after a
	// restart or between relays feeding one collector.
	ID        uint64
	Transport string // "msrp" or "msrps"
	Local     netip.AddrPort
	Remote    netip.AddrPort
	Dir       Direction // DirIn: accepted by a listener; DirOut: dialled by the relay
}

// TLSInfo describes a finished TLS handshake.
type TLSInfo struct {
	OK          bool
	Version     string
	CipherSuite string
	ServerName  string
	PeerSubject string // first peer certificate, "" when none
	PeerIssuer  string
}

// FrameInfo describes one frame as it crossed the wire.
type FrameInfo struct {
	Dir         Direction // DirIn: read from Conn; DirOut: written to Conn
	TransactID  []byte
	Method      []byte // nil for a response
	Status      int    // 0 for a request
	MessageID   []byte
	ContentType []byte
	// FromSession and ToSession are the relay sessions (session-ids of this
	// relay's Use-Path URIs) on the request sender's side and on its
	// receiver's side, "" where that side holds no session here (a link to
	// another relay, a client before its AUTH succeeded). A response carries
	// its request's pair unchanged, so one transaction shares one pair. An
	// AUTH request and its responses carry the session the 200 creates as
	// FromSession. A REPORT the relay makes about a SEND travels back to the
	// SEND's sender, as an end-to-end REPORT does: it carries the SEND's
	// pair swapped. The relay reports sessions; the tracer and the sinks
	// decide correlation from them.
	FromSession string
	ToSession   string
	Flag        byte
	Size        int64 // bytes on the wire, end-line included
	// Wire is the frame's first bytes on the wire, at most the relay's
	// trace_capture_bytes; nil (or shorter than Size says) when the
	// Observer's Wire() was false as the frame started, e.g. in the
	// instant tracing is switched on.
	Wire []byte
	// Answers is, for a response, the method of the request it answers
	// where the relay knows it (a response to a SEND, AUTH, REPORT or
	// NICKNAME the relay forwarded or answered itself); "" otherwise. A
	// string constant: an Observer may keep it.
	Answers string
	// Paired is the time of the frame this one pairs with, where the relay
	// knows it, zero otherwise: for a forwarded request (DirOut) when the
	// request it copies was read (that FrameIn's Event.Time); for a
	// response read (DirIn) when the request it answers began to be
	// written. Metrics measure relay latency and response time from it
	// without matching frames themselves.
	Paired time.Time
}

// Event is one thing the relay did.
type Event struct {
	Kind Kind
	// Time is when it happened; for a frame, when its first byte was read
	// (FrameIn) or began to be written (FrameOut), so a forwarded frame is
	// never stamped before the frame it copies.
	Time   time.Time
	Conn   ConnInfo
	TLS    *TLSInfo    // TLSHandshake
	Reason CloseReason // Closed
	Err    error       // ConnectFailed, Closed, failed TLSHandshake; nil otherwise
	Frame  *FrameInfo  // FrameIn, FrameOut
}
