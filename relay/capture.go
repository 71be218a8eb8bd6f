package relay

import (
	"io"
	"time"

	"github.com/msrpscope/msrpscope/tracer/event"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

var crlf = []byte("\r\n")

// The frame-in capture rebuilds a frame's wire bytes for the Observer from
// what the Reader hands out: start line and header fields, blank line,
// body, end-line. It does nothing without an event.Observer.

func (c *conn) beginIn(f *msrp.Frame) {
	c.inPaired, c.inAnswers = time.Time{}, ""
	c.capturing = c.r.tracing()
	c.inCap = c.inCap[:0]
	// Two levels: metadata while the Observer is enabled, the wire bytes
	// too only while it wants them (docs/ADMIN.md).
	c.wireIn = c.capturing && c.r.wire()
	if !c.capturing {
		return
	}
	c.capIn(f.Raw())
	if f.HasBody() {
		c.capIn(crlf)
	}
}

func (c *conn) capIn(p []byte) {
	if !c.wireIn {
		return
	}
	if room := c.r.captureBytes - len(c.inCap); room > 0 {
		c.inCap = append(c.inCap, p[:min(room, len(p))]...)
	}
}

// endIn reports the frame read from c to the Observer, stamped with the
// arrival of its first byte, with the relay sessions on its sender's and
// its receiver's side (event.FrameInfo); complete is false when its body
// broke off.
func (c *conn) endIn(f *msrp.Frame, from, to string, complete bool) {
	if !c.capturing {
		return
	}
	size := frameSize(f)
	if f.HasBody() {
		c.capIn(crlf)
	}
	flag := f.Flag()
	if complete {
		var end [7 + 255 + 3]byte
		e := msrp.AppendEndLine(end[:0], f.TransactID, flag)
		c.capIn(e)
	}
	// The read loop's own scratch: the Observer may not keep it.
	c.inFI = event.FrameInfo{Dir: event.DirIn, TransactID: f.TransactID, Method: f.Method, Status: f.StatusCode,
		MessageID: f.Get(msrp.HdrMessageID), ContentType: f.Get(msrp.HdrContentType),
		FromSession: from, ToSession: to, Flag: flag, Size: size, Wire: c.inCap, Paired: c.inPaired, Answers: c.inAnswers}
	if !c.wireIn {
		c.inFI.Wire = nil
	}
	c.inEv = event.Event{Kind: event.FrameIn, Time: c.inStart, Conn: c.connInfo(), Frame: &c.inFI}
	c.r.obs.Observe(&c.inEv)
}

// frameSize is f's size on the wire, end-line included, once its body is read.
func frameSize(f *msrp.Frame) int64 {
	size := int64(len(f.Raw())) + 7 + int64(len(f.TransactID)) + 3
	if f.HasBody() {
		size += 4 + f.Body().Len()
	}
	return size
}

// finishIn reads the rest of f's body (capturing it) and reports the frame.
func (c *conn) finishIn(f *msrp.Frame, from, to string) error {
	err := c.readIn(f)
	c.endIn(f, from, to, err == nil)
	return err
}

// readIn reads the rest of f's body, capturing it.
func (c *conn) readIn(f *msrp.Frame) error {
	body := f.Body()
	for {
		p, err := body.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		c.capIn(p)
	}
}
