package msrpclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Message is one MSRP message to SEND, possibly in several chunks.
type Message struct {
	MessageID   string // "" = a new random one
	ContentType string // "" with no body = a bodiless SEND; "" with a body = text/plain
	Body        []byte
	// BodyReader streams a large body of Size bytes instead of Body; it is
	// read one chunk at a time (ChunkSize, default DefaultStreamChunk).
	BodyReader io.Reader
	Size       int64
	// ChunkSize splits the body into chunks of at most this many bytes,
	// one SEND transaction each ('+' flags, '$' on the last). 0 = one
	// chunk for Body.
	ChunkSize int
	// FailureReport and SuccessReport are the header values; "" = header
	// absent (which means "yes" and "no", RFC 4975 §7.1.1).
	FailureReport string
	SuccessReport string
	// Headers are extra header fields, written before Content-Type.
	Headers []Header
}

// ChunkResult is the outcome of one chunk's transaction.
type ChunkResult struct {
	TransactID string
	ByteRange  msrp.ByteRange
	Code       int // 0 when no response was awaited (Failure-Report no/partial)
	Comment    string
	RTT        time.Duration // from the chunk's last byte written to its response
}

// Result is the outcome of a SEND.
type Result struct {
	MessageID string
	Chunks    []ChunkResult
}

// Pending is a SEND in progress (see SendAsync).
type Pending struct {
	done chan struct{}

	mu        sync.Mutex
	res       Result
	err       error
	remaining int
}

// Done is closed when every chunk's transaction has completed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result returns the result and the first error; valid after Done.
func (p *Pending) Result() (*Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &p.res, p.err
}

// Wait waits for Done or ctx.
func (p *Pending) Wait(ctx context.Context) (*Result, error) {
	select {
	case <-p.done:
		return p.Result()
	case <-ctx.Done():
		return nil, fmt.Errorf("msrpclient: waiting for SEND responses: %w", ctx.Err())
	}
}

func (p *Pending) add(n int) {
	p.mu.Lock()
	p.remaining += n
	p.mu.Unlock()
}

// complete records one outstanding part (a chunk, or the writer's own hold).
func (p *Pending) complete(idx int, r *response, sent time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx >= 0 {
		ch := &p.res.Chunks[idx]
		if r != nil {
			ch.Code, ch.Comment = r.code, r.comment
			if !sent.IsZero() {
				ch.RTT = r.at.Sub(sent)
			}
			if r.code != 200 && err == nil {
				err = fmt.Errorf("msrpclient: SEND %s chunk %s: %w", ch.TransactID, ch.ByteRange, &StatusError{Code: r.code, Comment: r.comment})
			}
		}
	}
	if err != nil && p.err == nil {
		p.err = err
	}
	p.remaining--
	if p.remaining == 0 {
		close(p.done)
	}
}

// Send sends msg to toPath and waits for every chunk's response (unless
// Failure-Report is "no" or "partial"). A non-200 response is an error
// (a *StatusError inside).
func (c *Client) Send(ctx context.Context, toPath []string, msg Message) (*Result, error) {
	p, err := c.SendAsync(ctx, toPath, msg)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// SendAsync writes every chunk of msg and returns without waiting for the
// responses. Each chunk awaiting a response takes a slot of the client's
// window (Options.Window); SendAsync blocks while the window is full. The
// error is for failures before or while writing; later ones are in the
// Pending.
func (c *Client) SendAsync(ctx context.Context, toPath []string, msg Message) (*Pending, error) {
	if len(toPath) == 0 {
		return nil, errors.New("msrpclient: SEND without To-Path")
	}
	size := int64(len(msg.Body))
	if msg.BodyReader != nil {
		size = msg.Size
	}
	chunk := int64(msg.ChunkSize)
	if chunk <= 0 {
		chunk = size
		if msg.BodyReader != nil {
			chunk = DefaultStreamChunk
		}
	}
	nChunks := 1
	if size > 0 {
		nChunks = int((size + chunk - 1) / chunk)
	}
	if msg.MessageID == "" {
		msg.MessageID = string(msrp.AppendTransactID(nil))
	}
	fr, err := msrp.ParseFailureReport(nilIfEmpty(msg.FailureReport))
	if err != nil {
		return nil, fmt.Errorf("msrpclient: %w", err)
	}
	await := fr == msrp.ReportYes
	ctype := msg.ContentType
	hasBody := size > 0 || ctype != ""
	if hasBody && ctype == "" {
		ctype = "text/plain"
	}
	to := strings.Join(toPath, " ")

	p := &Pending{done: make(chan struct{}), remaining: 1} // 1: held while writing
	p.res.MessageID = msg.MessageID
	p.res.Chunks = make([]ChunkResult, 0, nChunks)
	var buf []byte
	if msg.BodyReader != nil && size > 0 {
		buf = make([]byte, min(chunk, size))
	}
	var werr error
	for i := 0; i < nChunks; i++ {
		start := int64(i) * chunk
		end := min(start+chunk, size)
		var data []byte
		switch {
		case msg.BodyReader != nil:
			data = buf[:end-start]
			if _, err := io.ReadFull(msg.BodyReader, data); err != nil {
				werr = fmt.Errorf("msrpclient: reading body at %d: %w", start, err)
			}
		default:
			data = msg.Body[start:end]
		}
		if werr != nil {
			break
		}
		br := msrp.ByteRange{Start: start + 1, End: end, Total: size}
		flag := msrp.FlagMore
		if i == nChunks-1 {
			flag = msrp.FlagEnd
		}
		tid := string(msrp.TransactIDFor(nil, data))
		p.mu.Lock()
		idx := len(p.res.Chunks)
		p.res.Chunks = append(p.res.Chunks, ChunkResult{TransactID: tid, ByteRange: br})
		p.mu.Unlock()
		if await {
			if err := c.acquire(ctx); err != nil {
				werr = err
				break
			}
			p.add(1)
			if err := c.register(tid, false, func(r *response, sent time.Time, err error) { p.complete(idx, r, sent, err) }); err != nil {
				c.release()
				p.complete(idx, nil, time.Time{}, err)
				werr = err
				break
			}
		}
		err := c.writeFrame(func(w *msrp.Writer) error {
			if err := w.StartRequest([]byte(tid), "SEND"); err != nil {
				return err
			}
			w.HeaderString(msrp.HdrToPath, to)
			w.HeaderString(msrp.HdrFromPath, c.fromPath)
			w.HeaderString(msrp.HdrMessageID, msg.MessageID)
			w.Header(msrp.HdrByteRange, br.Append(nil))
			if msg.SuccessReport != "" {
				w.HeaderString(msrp.HdrSuccessReport, msg.SuccessReport)
			}
			if msg.FailureReport != "" {
				w.HeaderString(msrp.HdrFailureReport, msg.FailureReport)
			}
			for _, h := range msg.Headers {
				w.HeaderString(h.Name, h.Value)
			}
			if hasBody {
				w.HeaderString(msrp.HdrContentType, ctype)
				if _, err := w.Body().Write(data); err != nil {
					return err
				}
			}
			return w.End(flag)
		})
		if err != nil {
			if await {
				c.finish(tid, nil, err)
			}
			werr = err
			break
		}
		if await {
			c.arm(tid, time.Now())
		}
	}
	p.complete(-1, nil, time.Time{}, werr)
	if werr != nil {
		return p, werr
	}
	return p, nil
}

func nilIfEmpty(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// Request sends a request of any method other than SEND and AUTH (e.g.
// NICKNAME, RFC 7701, or an extension) with the given header fields and
// optional body, and waits for its response, which travels end to end
// (RFC 4975 §7.2). A REPORT gets no response: Request returns once it is
// written, with code 0.
func (c *Client) Request(ctx context.Context, method string, toPath []string, headers []Header, body []byte) (code int, comment string, err error) {
	if len(toPath) == 0 {
		return 0, "", errors.New("msrpclient: request without To-Path")
	}
	tid := string(msrp.TransactIDFor(nil, body))
	write := func(w *msrp.Writer) error {
		if err := w.StartRequest([]byte(tid), method); err != nil {
			return err
		}
		w.HeaderString(msrp.HdrToPath, strings.Join(toPath, " "))
		w.HeaderString(msrp.HdrFromPath, c.fromPath)
		for _, h := range headers {
			w.HeaderString(h.Name, h.Value)
		}
		if body != nil {
			if _, err := w.Body().Write(body); err != nil {
				return err
			}
		}
		return w.End(msrp.FlagEnd)
	}
	if method == "REPORT" {
		return 0, "", c.writeFrame(write)
	}
	r, err := c.roundTrip(ctx, tid, write)
	if err != nil {
		return 0, "", fmt.Errorf("msrpclient: %s: %w", method, err)
	}
	if r.code != 200 {
		return r.code, r.comment, fmt.Errorf("msrpclient: %s: %w", method, &StatusError{Code: r.code, Comment: r.comment})
	}
	return r.code, r.comment, nil
}
