package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the operation failed: relay or ClickHouse unreachable, token refused, an API error
	exitUsage = 2 // bad command line
)

const defaultAdmin = "http://127.0.0.1:8055"

const usageText = `msrpctl drives a running msrpscope through its admin API, and queries traces stored in ClickHouse.

Usage: msrpctl [flags] COMMAND [ARGS] [flags]

Tracing (admin API):
  trace status                       global switch, rules and dynamic traces
  trace on | trace off               the global switch (OpenSIPS msrp_trace on|off)
  trace on --session ID|--user NAME|--cidr CIDR [--for 10m] [--to SINK[,SINK]]
                                     a dynamic trace, even while tracing is off
  trace list                         running dynamic traces
  trace stop ID                      end a dynamic trace
  rules                              rules, switches and matched counts
  rule NAME on|off                   one rule's switch
  sinks                              sinks, state and every counter

Relay (admin API):
  sessions    [--user U] [--session ID] [--remote ADDR|CIDR] [--transport msrp|msrps]
              [--limit N] [--cursor C] [--all]
  connections [same filters and paging]
  kill session ID | kill connection ID
  stats                              relay statistics
  reload                             re-read the configuration (as SIGHUP)
  health                             readiness (/readyz) and why not ready

Stored traces (ClickHouse):
  trace session ID [--limit N]       a relay session's frames in order (a ladder)
  trace message MESSAGE-ID           one message's frames across hops and relays
  trace correlation ID               the frames of one correlation id
  trace ip ADDR|CIDR [--since 1h] [--until TIME] [--port N] [--limit N]
  trace top [--since 1h] [-n 10]     remote addresses with the most frames
  trace failures [--since 1h]        failure responses by status and direction
  trace auth-failures [--since 1h]   failed AUTHs by user and address

Flags (anywhere on the line):
  --admin URL          admin API (env MSRPSCOPE_ADMIN; default ` + defaultAdmin + `)
  --token T            bearer token (env MSRPSCOPE_TOKEN)
  --token-file FILE    file holding the token (env MSRPSCOPE_TOKEN_FILE)
  --cacert FILE        PEM CA certificates for an https admin API
  --clickhouse H:P     ClickHouse native protocol (env MSRPSCOPE_CLICKHOUSE; default 127.0.0.1:9000)
  --database DB        ClickHouse database (env MSRPSCOPE_DATABASE; default msrpscope)
  --ch-user U          ClickHouse user (env MSRPSCOPE_CLICKHOUSE_USER; default default)
  --ch-password P      ClickHouse password (env MSRPSCOPE_CLICKHOUSE_PASSWORD)
  --ch-tls             TLS to ClickHouse (its secure port, 9440), verified with the system roots
  --ch-cacert FILE     TLS to ClickHouse, verified with these PEM CA certificates
  --timeout D          bound on each command (default 10s)
  --json               JSON output for scripts
  -h, --help           this help

Exit status: 0 done, 1 failed (one line on stderr says why), 2 bad command line.
`

// options are the flags every command takes.
type options struct {
	admin, token, tokenFile, cacert string
	clickhouse, database            string
	chUser, chPassword              string
	chTLS                           bool
	chCACert                        string
	timeout                         time.Duration
	json                            bool
}

// errUsage marks a bad command line: exit 2 with the usage.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usagef(format string, a ...any) error { return errUsage{fmt.Sprintf(format, a...)} }

// cmdline is one command's arguments: its own flags and the common ones,
// parsed wherever they appear, and the positional arguments in order.
type cmdline struct {
	fs   *flag.FlagSet
	opts *options
	pos  []string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// newFlags returns a flag set with the common flags bound to o.
func newFlags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("msrpctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.admin, "admin", o.admin, "")
	fs.StringVar(&o.token, "token", o.token, "")
	fs.StringVar(&o.tokenFile, "token-file", o.tokenFile, "")
	fs.StringVar(&o.cacert, "cacert", o.cacert, "")
	fs.StringVar(&o.clickhouse, "clickhouse", o.clickhouse, "")
	fs.StringVar(&o.database, "database", o.database, "")
	fs.StringVar(&o.chUser, "ch-user", o.chUser, "")
	fs.StringVar(&o.chPassword, "ch-password", o.chPassword, "")
	fs.BoolVar(&o.chTLS, "ch-tls", o.chTLS, "")
	fs.StringVar(&o.chCACert, "ch-cacert", o.chCACert, "")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "")
	fs.BoolVar(&o.json, "json", o.json, "")
	return fs
}

// parseInterleaved parses args with fs, taking positional arguments from
// between the flags ("--" ends the flags).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// run is msrpctl without the process: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &options{
		admin:      envOr("MSRPSCOPE_ADMIN", defaultAdmin),
		clickhouse: envOr("MSRPSCOPE_CLICKHOUSE", "127.0.0.1:9000"),
		database:   envOr("MSRPSCOPE_DATABASE", "msrpscope"),
		chUser:     envOr("MSRPSCOPE_CLICKHOUSE_USER", "default"),
		chPassword: os.Getenv("MSRPSCOPE_CLICKHOUSE_PASSWORD"),
		timeout:    10 * time.Second,
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, usageText)
			return exitOK
		}
	}
	// The command word is the first positional argument; the common flags
	// may come before it.
	fs := newFlags(o)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError(stderr, usagef("no command"))
	}
	if rest[0] == "help" {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		return usageError(stderr, usagef("unknown command %q", rest[0]))
	}
	err := cmd(ctx, &env{opts: o, stdout: stdout, stderr: stderr}, rest[1:])
	if err == nil {
		return exitOK
	}
	var ue errUsage
	if errors.As(err, &ue) {
		return usageError(stderr, err)
	}
	var pe *plainError
	if errors.As(err, &pe) {
		err = pe
	}
	fmt.Fprintln(stderr, "msrpctl: "+oneLine(err.Error()))
	return exitFail
}

func usageError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "msrpctl: %s\n\n%s", oneLine(err.Error()), usageText)
	return exitUsage
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// env is what a command works with.
type env struct {
	opts           *options
	stdout, stderr io.Writer
}

// command runs one command with its arguments (after the command word).
type command func(ctx context.Context, e *env, args []string) error

var commands map[string]command

func init() {
	commands = map[string]command{
		"trace":       cmdTrace,
		"rules":       cmdRules,
		"rule":        cmdRule,
		"sinks":       cmdSinks,
		"sessions":    cmdSessions,
		"connections": cmdConnections,
		"kill":        cmdKill,
		"stats":       cmdStats,
		"reload":      cmdReload,
		"health":      cmdHealth,
	}
}

// parse parses a command's arguments; define adds the command's own flags
// to fs. want is the number of positional arguments (-1: any).
func (e *env) parse(args []string, want int, define func(fs *flag.FlagSet)) (*cmdline, error) {
	fs := newFlags(e.opts)
	if define != nil {
		define(fs)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, errUsage{err.Error()}
	}
	if want >= 0 && len(pos) != want {
		if len(pos) > want {
			return nil, usagef("unexpected arguments %q", pos[want:])
		}
		return nil, usagef("missing arguments")
	}
	return &cmdline{fs: fs, opts: e.opts, pos: pos}, nil
}

// admin returns the admin API client from the flags and environment: the
// token from --token, --token-file, MSRPSCOPE_TOKEN, MSRPSCOPE_TOKEN_FILE,
// the first set.
func (e *env) admin() (*adminClient, error) {
	o := e.opts
	if o.token != "" && o.tokenFile != "" {
		return nil, usagef("--token and --token-file: give one")
	}
	token, from := o.token, "--token"
	file := o.tokenFile
	fileFrom := "--token-file"
	if token == "" && file == "" {
		if token = os.Getenv("MSRPSCOPE_TOKEN"); token != "" {
			from = "MSRPSCOPE_TOKEN"
		} else if file = os.Getenv("MSRPSCOPE_TOKEN_FILE"); file != "" {
			fileFrom = "MSRPSCOPE_TOKEN_FILE"
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("token file (%s): %w", fileFrom, err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("token file %s (%s) is empty", file, fileFrom)
		}
		from = fileFrom
	}
	if token == "" {
		from = ""
	}
	return newAdminClient(o.admin, token, from, o.cacert, o.timeout)
}

// withTimeout bounds one command.
func (e *env) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.opts.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.opts.timeout)
}
