package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// adminClient calls msrpscope's admin HTTP API (docs/ADMIN.md).
type adminClient struct {
	base      string // scheme://host:port, no trailing slash
	token     string
	tokenFrom string // where the token came from, for the 401 message ("" = none set)
	http      *http.Client
}

// apiError is an answer of the admin API with a status of 400 or above.
type apiError struct {
	Status  int
	Message string // the body's "error", or the status text
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// plainError is a failure that says everything by itself (the relay or
// ClickHouse unreachable, the token refused): msrpctl prints it without the
// context of the command that met it.
type plainError struct{ msg string }

func (e *plainError) Error() string { return e.msg }

// newAdminClient builds the client; caFile (optional) holds PEM certificates
// trusted for an https admin address.
func newAdminClient(addr, token, tokenFrom, caFile string, timeout time.Duration) (*adminClient, error) {
	base, err := normalizeAdmin(addr)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the admin API is reached directly, never through an HTTP proxy from the environment
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert: no PEM certificate in %s", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &adminClient{base: base, token: token, tokenFrom: tokenFrom,
		http: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// normalizeAdmin accepts http(s)://host:port[/] or a bare host:port.
func normalizeAdmin(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", usagef("admin address %q: want http://host:port or https://host:port", addr)
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/"), nil
}

// do makes one request; body (not nil) is sent as JSON. A 2xx answer's
// body is returned (nil for 204); anything else is an error saying why in
// one line.
func (c *adminClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return nil, &plainError{fmt.Sprintf("admin API at %s: its certificate is not trusted (%s): give its CA with --cacert",
			c.base, netReason(cve.Err))}
	}
	if err != nil {
		return nil, &plainError{fmt.Sprintf("admin API at %s unreachable: %s", c.base, netReason(err))}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: reading the answer: %s", c.base, netReason(err))
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if c.tokenFrom == "" {
			return nil, &plainError{"token refused (401): set --token, --token-file or MSRPSCOPE_TOKEN"}
		}
		return nil, &plainError{fmt.Sprintf("token refused (401): the token from %s is wrong", c.tokenFrom)}
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode, Message: strings.ToLower(http.StatusText(resp.StatusCode))}
		var eb struct {
			Error   string   `json:"error"`
			Reasons []string `json:"reasons"`
		}
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			e.Message = eb.Error
			if len(eb.Reasons) > 0 {
				e.Message += ": " + strings.Join(eb.Reasons, "; ")
			}
		}
		return b, e
	}
	return b, nil
}

// netReason is the innermost cause of a network error, as the system says
// it: "connection refused", "no such host", "i/o timeout".
func netReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Err + " (" + de.Name + ")"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return err.Error()
}
