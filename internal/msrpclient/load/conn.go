package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient"
	"github.com/msrpscope/msrpscope/relay/msrp"
)

// Buffer sizes of an engine connection: reads of many small frames per
// wake-up, writes of a whole window of small SENDs per flush (large
// bodies are not copied into it: gatherWriter). B's reads on large
// transfers are longer: fewer system calls per MB, the body scanned in
// longer runs (bReadSize).
const (
	readBufSize     = 64 << 10
	writeBufSize    = 64 << 10
	bReadBufSize    = 256 << 10
	bigReadMin      = 32 << 10 // body bytes per SEND from which B reads bReadBufSize
	bigReadMaxTotal = 64 << 20 // B's read buffers of all pairs at most (else readBufSize)
)

// mconn is one connection of the lean engine: one reader (the owner's
// goroutine) and one buffered writer, used under the owner's lock.
type mconn struct {
	nc  net.Conn
	br  *bufio.Reader
	rd  *msrp.Reader
	bw  *gatherWriter
	uri string // our own URI (From-Path)
}

// dial connects to addr (TLS when tc is set) and names the endpoint
// msrp[s]://<local ip>:<local port>/<random session-id>;tcp; rbuf is
// its read buffer's size.
func dial(ctx context.Context, addr string, tc *tls.Config, rbuf int) (*mconn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		tc = tc.Clone()
		if tc.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				tc.ServerName = host
			}
		}
		tlc := tls.Client(nc, tc)
		if err := tlc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tlc
	}
	la, _ := nc.LocalAddr().(*net.TCPAddr)
	u := msrp.URI{Secure: tc != nil, Host: "127.0.0.1", SessionID: string(msrp.AppendTransactID(nil)), Transport: "tcp"}
	if la != nil {
		u.Host, u.Port = la.IP.String(), la.Port
	}
	return newMconn(nc, u, rbuf), nil
}

// newMconn is the engine's connection on nc, named u, reading rbuf bytes
// at a time.
func newMconn(nc net.Conn, u msrp.URI, rbuf int) *mconn {
	br := bufio.NewReaderSize(nc, rbuf)
	return &mconn{nc: nc, br: br, rd: msrp.NewReader(br, msrp.Limits{}), bw: newGatherWriter(nc, writeBufSize), uri: u.String()}
}

// authPath authenticates along toPath (RFC 4976 §5.1: the last URI is the
// relay authenticated at, the ones before are relays already authenticated
// at) and returns the 200's Use-Path URIs. It runs before the engine
// starts, so it reads and writes the connection synchronously, bounded by
// ctx through the connection's deadline.
func (c *mconn) authPath(ctx context.Context, toPath []string, user, password string) ([]string, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
		defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	}
	to := strings.Join(toPath, " ")
	digestURI := toPath[len(toPath)-1] // RFC 4976 §9.1: the rightmost To-Path URI
	code, comment, hdrs, err := c.authRoundTrip(to, "")
	for attempt := 0; err == nil; attempt++ {
		switch code {
		case 200:
			use := hdrs[strings.ToLower(msrp.HdrUsePath)]
			if len(use) == 0 {
				return nil, errors.New("AUTH: 200 without Use-Path")
			}
			if _, err := msrp.ParsePath(use[0]); err != nil {
				return nil, fmt.Errorf("AUTH: 200 Use-Path: %w", err)
			}
			return strings.Fields(use[0]), nil
		case 401:
		default:
			return nil, &msrpclient.StatusError{Code: code, Comment: comment}
		}
		ch, ok := pickChallenge(hdrs[strings.ToLower(msrp.HdrWWWAuthenticate)])
		if !ok {
			return nil, msrpclient.ErrNoChallenge
		}
		if attempt > 0 { // a second 401 is final unless its nonce went stale
			if stale, _ := ch.Get("stale"); !strings.EqualFold(stale, "true") || attempt > 1 {
				return nil, &msrpclient.StatusError{Code: code, Comment: comment}
			}
		}
		cred, verify, derr := msrpclient.DigestAuthorization(ch, "AUTH", digestURI, user, password)
		if derr != nil {
			return nil, derr
		}
		code, comment, hdrs, err = c.authRoundTrip(to, cred)
		if err == nil && code == 200 {
			if ai := hdrs[strings.ToLower(msrp.HdrAuthenticationInf)]; len(ai) > 0 {
				if err := verify(ai[0]); err != nil {
					return nil, err
				}
			}
		}
	}
	return nil, err
}

func pickChallenge(values []string) (msrp.Digest, bool) {
	for _, v := range values {
		d, err := msrp.ParseDigest([]byte(v))
		if err != nil {
			continue
		}
		if _, ok := d.Get("nonce"); !ok {
			continue
		}
		if alg, ok := d.Get("algorithm"); !ok || strings.EqualFold(alg, "MD5") || strings.EqualFold(alg, "SHA-256") {
			return d, true
		}
	}
	return nil, false
}

// authRoundTrip writes one AUTH and reads frames up to its response,
// returning the header fields by lower-case name.
func (c *mconn) authRoundTrip(to, cred string) (code int, comment string, hdrs map[string][]string, err error) {
	tid := msrp.AppendTransactID(nil)
	b := msrp.AppendRequestLine(nil, tid, "AUTH")
	b = msrp.AppendHeader(b, msrp.HdrToPath, to)
	b = msrp.AppendHeader(b, msrp.HdrFromPath, c.uri)
	if cred != "" {
		b = msrp.AppendHeader(b, msrp.HdrAuthorization, cred)
	}
	b = msrp.AppendEndLine(b, tid, msrp.FlagEnd)
	if _, err := c.bw.Write(b); err != nil {
		return 0, "", nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return 0, "", nil, err
	}
	for {
		f, err := c.rd.ReadFrame()
		if err != nil {
			return 0, "", nil, err
		}
		if f.IsRequest() || string(f.TransactID) != string(tid) {
			continue // nothing else is expected before the engine starts
		}
		hdrs = make(map[string][]string, len(f.Headers))
		for _, h := range f.Headers {
			k := strings.ToLower(string(h.Name))
			hdrs[k] = append(hdrs[k], string(h.Value))
		}
		return f.StatusCode, string(f.Comment), hdrs, nil
	}
}

// addrOf is the host:port of an MSRP URI (port 2855 when it has none).
func addrOf(uri string) (string, bool, error) {
	u, err := msrp.ParseURI(uri)
	if err != nil {
		return "", false, err
	}
	if u.Port == 0 {
		u.Port = 2855
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port)), u.Secure, nil
}
