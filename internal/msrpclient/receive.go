package msrpclient

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Header is a header field copied out of a frame.
type Header struct {
	Name  string
	Value string
}

// Received is an incoming request, copied out of the reader's buffer.
type Received struct {
	Method      string
	TransactID  string
	ToPath      []string
	FromPath    []string
	MessageID   string
	ByteRange   msrp.ByteRange // zero when absent or malformed
	Status      *msrp.Status   // REPORT Status; nil when absent or malformed
	ContentType string
	Headers     []Header // all header fields, in order
	HasBody     bool
	// Body is the body when it was at most Options.MaxBodyKeep bytes;
	// nil when it was larger (then only BodyHash is set).
	Body     []byte
	BodyHash *[sha256.Size]byte // SHA-256 of a body that was not kept
	BodySize int64
	Flag     byte // end-line flag: '$', '+' or '#'
	// Responded tells whether the client answered the request itself.
	Responded bool
}

// Get returns the first header field named name (case-insensitive).
func (r *Received) Get(name string) (string, bool) {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// Sum returns the SHA-256 of the body, kept or not.
func (r *Received) Sum() [sha256.Size]byte {
	if r.BodyHash != nil {
		return *r.BodyHash
	}
	return sha256.Sum256(r.Body)
}

func (c *Client) handleRequest(f *msrp.Frame) error {
	rec := &Received{
		Method:     string(f.Method),
		TransactID: string(f.TransactID),
		HasBody:    f.HasBody(),
	}
	if !c.opts.DiscardIncoming {
		rec.Headers = copyHeaders(f)
	}
	rec.ToPath = strings.Fields(string(f.Get(msrp.HdrToPath)))
	rec.FromPath = strings.Fields(string(f.Get(msrp.HdrFromPath)))
	rec.MessageID = string(f.Get(msrp.HdrMessageID))
	rec.ContentType = string(f.Get(msrp.HdrContentType))
	if v := f.Get(msrp.HdrByteRange); v != nil {
		if br, err := msrp.ParseByteRange(v); err == nil {
			rec.ByteRange = br
		}
	}
	if v := f.Get(msrp.HdrStatus); v != nil {
		if st, err := msrp.ParseStatus(v); err == nil {
			rec.Status = &st
		}
	}
	if err := c.readBody(f, rec); err != nil {
		return err
	}
	rec.Flag = f.Flag()
	c.reqs.Add(1)
	c.bodyBytes.Add(rec.BodySize)

	if rec.Method == "SEND" {
		c.sends.Add(1)
		if err := c.autoAnswerSend(f, rec); err != nil {
			return err
		}
	}
	if c.opts.DiscardIncoming {
		return nil
	}
	select {
	case c.incoming <- rec:
		return nil
	case <-c.done:
		return ErrClosed
	}
}

// readBody keeps a body up to MaxBodyKeep bytes, hashing a larger one.
func (c *Client) readBody(f *msrp.Frame, rec *Received) error {
	body := f.Body()
	var h hash.Hash
	var kept []byte
	if f.HasBody() {
		kept = []byte{}
	}
	for {
		p, err := body.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading body of %s %s: %w", rec.Method, rec.TransactID, err)
		}
		rec.BodySize += int64(len(p))
		if h == nil && int64(len(kept)+len(p)) <= c.opts.MaxBodyKeep {
			kept = append(kept, p...)
			continue
		}
		if h == nil {
			h = sha256.New()
			h.Write(kept)
			kept = nil
		}
		h.Write(p)
	}
	if h != nil {
		var sum [sha256.Size]byte
		h.Sum(sum[:0])
		rec.BodyHash = &sum
	}
	rec.Body = kept
	return nil
}

// autoAnswerSend answers an incoming SEND with 200 (RFC 4975 §7.2) unless
// Failure-Report is "no" or "partial", and sends a success REPORT for the
// last chunk of a message that asked for one (RFC 4975 §7.1.2, §11.6).
func (c *Client) autoAnswerSend(f *msrp.Frame, rec *Received) error {
	fr, err := msrp.ParseFailureReport(f.Get(msrp.HdrFailureReport))
	if err != nil {
		fr = msrp.ReportYes // malformed: answer anyway
	}
	if fr == msrp.ReportYes && len(rec.FromPath) > 0 {
		if err := c.respond(rec, 200, "OK"); err != nil {
			return err
		}
		rec.Responded = true
	}
	sr, _ := msrp.ParseSuccessReport(f.Get(msrp.HdrSuccessReport))
	if sr != msrp.ReportYes || rec.Flag != msrp.FlagEnd || !c.autoReport.Load() || len(rec.FromPath) == 0 {
		return nil
	}
	total := rec.ByteRange.Total
	if rec.ByteRange.Start == 0 || total == msrp.Unknown {
		// Unknown total: what this last chunk says it ends at.
		total = max(rec.ByteRange.Start-1, 0) + rec.BodySize
	}
	var rng msrp.ByteRange
	if total == 0 {
		rng = msrp.ByteRange{Start: 1, End: 0, Total: 0}
	} else {
		rng = msrp.ByteRange{Start: 1, End: total, Total: total}
	}
	to := strings.Join(rec.FromPath, " ")
	err = c.writeFrame(func(w *msrp.Writer) error {
		if err := w.StartRequest(msrp.TransactIDFor(nil, nil), "REPORT"); err != nil {
			return err
		}
		w.HeaderString(msrp.HdrToPath, to)
		w.HeaderString(msrp.HdrFromPath, c.localURI)
		w.HeaderString(msrp.HdrMessageID, rec.MessageID)
		w.Header(msrp.HdrByteRange, rng.Append(nil))
		w.HeaderString(msrp.HdrStatus, "000 200 OK")
		return w.End(msrp.FlagEnd)
	})
	if err != nil {
		return err
	}
	c.reports.Add(1)
	return nil
}

// Respond answers an incoming request (for methods the client does not
// answer itself). To-Path is the first From-Path URI for SEND and the full
// From-Path otherwise (RFC 4975 §7.2); From-Path is LocalURI.
func (c *Client) Respond(rec *Received, code int, comment string) error {
	if rec.Method == "REPORT" {
		return errors.New("msrpclient: REPORT requests are never answered (RFC 4975 §7.1.2)")
	}
	return c.respond(rec, code, comment)
}

func (c *Client) respond(rec *Received, code int, comment string) error {
	if len(rec.FromPath) == 0 {
		return fmt.Errorf("msrpclient: cannot answer %s %s: no From-Path", rec.Method, rec.TransactID)
	}
	to := rec.FromPath[0]
	if rec.Method != "SEND" {
		to = strings.Join(rec.FromPath, " ")
	}
	return c.writeFrame(func(w *msrp.Writer) error {
		if err := w.StartResponse([]byte(rec.TransactID), code, comment); err != nil {
			return err
		}
		w.HeaderString(msrp.HdrToPath, to)
		w.HeaderString(msrp.HdrFromPath, c.localURI)
		return w.End(msrp.FlagEnd)
	})
}
