// Command msrpload drives an MSRP relay on loopback with pairs of clients:
// each pair AUTHs, then A SENDs to B through the relay as fast as the window
// allows, and msrpload reports SEND frames/s, MB/s, 200-response latency and
// errors by kind. The run is always bounded (-duration, default 10s, and/or -count).
//
//	msrpload -relay 'msrp://127.0.0.1:2855;tcp' -user alice -pairs 4 -window 64 -size 100 -duration 10s
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("msrpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	relay := fs.String("relay", "msrp://127.0.0.1:2855;tcp", "the relay's MSRP URI (msrps:// for TLS)")
	addr := fs.String("addr", "", "host:port to dial (default: from -relay)")
	insecure := fs.Bool("insecure", false, "TLS: do not verify the relay's certificate")
	caFile := fs.String("ca", "", "TLS: PEM file of CA certificates to verify the relay with")
	user := fs.String("user", "alice", "AUTH user name")
	password := fs.String("password", "", "AUTH password (default: $MSRPSCOPE_DEMO_PASSWORD)")
	pairs := fs.Int("pairs", 1, "client pairs")
	window := fs.Int("window", 32, "outstanding SEND transactions per pair")
	size := fs.Int("size", 100, "body bytes per message")
	chunk := fs.Int("chunk", 0, "chunk size in bytes for large bodies (0: one chunk)")
	duration := fs.Duration("duration", 0, "how long to send (default 10s when -count is not given)")
	count := fs.Int("count", 0, "messages per pair (0: no count limit)")
	timeout := fs.Duration("timeout", 30*time.Second, "response timeout per transaction")
	asJSON := fs.Bool("json", false, "print the report as JSON before the summary line")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *password == "" {
		*password = os.Getenv("MSRPSCOPE_DEMO_PASSWORD")
	}
	opts := load.Options{
		RelayURI: *relay, Addr: *addr, User: *user, Password: *password,
		Pairs: *pairs, Window: *window, Size: *size, Chunk: *chunk,
		Count: *count, Duration: *duration, ResponseTimeout: *timeout, Logger: logger,
	}
	if strings.HasPrefix(strings.ToLower(*relay), "msrps://") {
		tc, err := tlsConfig(*insecure, *caFile)
		if err != nil {
			logger.Error("TLS setup", "err", err)
			return 2
		}
		opts.TLS = tc
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := load.Run(ctx, opts)
	if err != nil {
		logger.Error("load run failed", "err", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			logger.Error("writing JSON", "err", err)
			return 1
		}
	}
	fmt.Fprintln(stdout, rep.Summary())
	if rep.Frames == 0 {
		return 1
	}
	return 0
}

func tlsConfig(insecure bool, caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // -insecure is explicit
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading -ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("no certificates in -ca file")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
