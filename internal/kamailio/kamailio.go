// Package kamailio runs a real Kamailio (5.6, Debian packages kamailio and
// kamailio-extra-modules) as an MSRP relay on loopback for tests.
//
// Start writes a config from Template (the msrp module's "cmap" example with
// the use_path_addr fix: host:port without scheme), starts
// `kamailio -f cfg -DD -E` on a free 127.0.0.1 port, waits until the port
// accepts connections and stops the process when the test ends. Without the
// kamailio binary or msrp.so the test is skipped, unless the environment
// variable CI is set, when it fails: CI can never silently skip. Launch
// does the same outside a test (msrpload bench), returning errors.
package kamailio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/msrpscope/msrpscope/internal/proc"
	"github.com/msrpscope/msrpscope/internal/testenv"
)

// Credentials and realm of the default config. Kamailio's
// pv_www_authenticate checks only the password; any user name works.
const (
	Realm    = "myrealm"
	User     = "alice"
	Password = "xyz123"
)

// DefaultModPath is where Debian installs Kamailio's modules.
const DefaultModPath = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

// Config selects what Start runs. The zero value is the seed's cmap relay.
type Config struct {
	// Template overrides the config template; it is executed with a
	// TemplateData. Default Template.
	Template *template.Template
	// Password checked for AUTH (default Password).
	Password string
	// Children is Kamailio's number of TCP worker processes (default 2).
	Children int
	// TCPReadBufSize sets tcp_rd_buf_size when > 0 (Kamailio's default
	// 16383 limits frame size).
	TCPReadBufSize int
	// ExtraGlobals, ExtraModules and ExtraRoute are inserted verbatim:
	// after the global parameters, after the module parameters, and at the
	// end of the file (for more route blocks).
	ExtraGlobals, ExtraModules, ExtraRoute string
	// StartTimeout bounds the wait for the port to accept (default 20s).
	StartTimeout time.Duration
	// Modules are the module files that must be in DefaultModPath for the
	// config to load (default msrp.so); a missing one skips the test, or
	// fails it when CI is set, like a missing binary.
	Modules []string
	// Vars is passed to the template as TemplateData.Vars, for templates
	// that need more than the fields below (e.g. {{.Vars.HEPPort}}).
	Vars map[string]any
	// SharedMemMB and PkgMemMB are kamailio's -m and -M (default 64 and 8):
	// the write queues live in shared memory.
	SharedMemMB, PkgMemMB int
	// ParentDir is where Launch creates the instance's directory; when
	// set, Stop leaves it (the parent's owner removes it). Default: a new
	// directory under os.TempDir that Stop removes.
	ParentDir string
}

// TemplateData is what Template is executed with.
type TemplateData struct {
	Port           int
	Dir            string // the instance's temp dir
	CtlSocket      string // unix socket path for the ctl module
	ModPath        string
	Realm          string
	Password       string
	Children       int
	TCPReadBufSize int
	ExtraGlobals   string
	ExtraModules   string
	ExtraRoute     string
	Vars           map[string]any // Config.Vars
}

// Template is the MSRP relay config: the Kamailio msrp module
// documentation's "msrp_cmap_ functions" example, with use_path_addr as
// host:port (the documented "msrp://..." form makes Kamailio build
// msrp://msrp://... Use-Paths), the ctl socket in the temp dir and logs on
// stderr.
var Template = template.Must(template.New("kamailio.cfg").Parse(configText))

const configText = `#!KAMAILIO
debug=2
log_stderror=yes
log_color=no
children={{.Children}}
auto_aliases=no
disable_sctp=yes
tcp_accept_no_cl=yes
tcp_connection_lifetime=1810
{{- if gt .TCPReadBufSize 0}}
tcp_rd_buf_size={{.TCPReadBufSize}}
{{- end}}
listen=tcp:127.0.0.1:{{.Port}}
mpath="{{.ModPath}}"
{{.ExtraGlobals}}
loadmodule "sl.so"
loadmodule "kex.so"
loadmodule "ctl.so"
loadmodule "msrp.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "cfgutils.so"
loadmodule "xlog.so"

modparam("ctl", "binrpc", "unix:{{.CtlSocket}}")
modparam("auth", "nonce_count", 1)
modparam("auth", "qop", "auth")
modparam("msrp", "cmap_size", 8)
modparam("msrp", "use_path_addr", "127.0.0.1:{{.Port}}")
{{.ExtraModules}}
request_route {
	sl_send_reply("403", "No SIP Here");
	exit;
}

reply_route {
	drop;
}

event_route[msrp:frame-in] {
	msrp_reply_flags("1");
	if (msrp_is_reply()) {
		msrp_relay();
	} else if ($msrp(method)=="AUTH") {
		if ($msrp(nexthops)>0) {
			msrp_relay();
			exit;
		}
		$var(passwd) = "{{.Password}}";
		if (!pv_www_authenticate("{{.Realm}}", "$var(passwd)", "0", "$msrp(method)")) {
			if (auth_get_www_authenticate("{{.Realm}}", "1", "$var(wauth)")) {
				msrp_reply("401", "Unauthorized", "$var(wauth)");
			} else {
				msrp_reply("500", "Server Error");
			}
			exit;
		}
		msrp_cmap_save();
	} else if ($msrp(method)=="SEND" || $msrp(method)=="REPORT") {
		if ($msrp(nexthops)>1) {
			if ($msrp(method)!="REPORT") {
				msrp_reply("200", "OK");
			}
			msrp_relay();
			exit;
		}
		if (msrp_cmap_lookup()) {
			if ($msrp(method)!="REPORT") {
				msrp_reply("200", "OK");
			}
			msrp_relay_flags("1");
			msrp_relay();
		} else {
			msrp_reply("481", "Session-does-not-exist");
		}
	} else {
		msrp_reply("501", "Request-method-not-understood");
	}
}
{{.ExtraRoute}}
`

// Instance is a running Kamailio.
type Instance struct {
	port    int
	dir     string
	cfgPath string
	logPath string
	proc    *proc.Proc    // nil until started
	exited  chan struct{} // closed when the process has been reaped
	// removeDir is the directory Launch created, removed by Stop.
	removeDir string
}

// Addr returns "127.0.0.1:PORT".
func (k *Instance) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }

// Port returns the MSRP port.
func (k *Instance) Port() int { return k.port }

// URI returns the relay's MSRP URI, "msrp://127.0.0.1:PORT;tcp".
func (k *Instance) URI() string { return "msrp://" + k.Addr() + ";tcp" }

// ConfigPath returns the path of the config file written.
func (k *Instance) ConfigPath() string { return k.cfgPath }

// Log returns Kamailio's output so far.
func (k *Instance) Log() string { return proc.ReadLog(k.logPath) }

// LogTail returns the last n lines of the log.
func (k *Instance) LogTail(n int) string { return proc.Tail(k.Log(), n) }

// Exited is closed when the process has exited.
func (k *Instance) Exited() <-chan struct{} { return k.exited }

// Binary returns the kamailio binary's path and checks that msrp.so is in
// modPath. When either is missing it skips tb, or fails it when CI is set.
func Binary(tb testing.TB, modPath string) string {
	tb.Helper()
	return findBinary(tb, modPath, "msrp.so")
}

// findBinary is Binary checking for the given module files.
func findBinary(tb testing.TB, modPath string, modules ...string) string {
	tb.Helper()
	bin, err := LookBinary(modPath, modules...)
	if err != nil {
		testenv.Missing(tb, err.Error())
	}
	return bin
}

// LookBinary returns the kamailio binary's path, or an error naming what
// is missing and how to install it when the binary or one of the module
// files in modPath is not there.
func LookBinary(modPath string, modules ...string) (string, error) {
	bin, err := exec.LookPath("kamailio")
	if err != nil {
		for _, p := range []string{"/usr/sbin/kamailio", "/usr/local/sbin/kamailio"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return "", errors.New("kamailio binary not found (apt-get install kamailio kamailio-extra-modules)")
	}
	for _, m := range modules {
		if _, e := os.Stat(filepath.Join(modPath, m)); e != nil {
			return "", errors.New(m + " not found in " + modPath + " (apt-get install kamailio kamailio-extra-modules)")
		}
	}
	return bin, nil
}

// Start runs Kamailio with cfg and returns when its port accepts TCP
// connections (the config must listen on tcp:127.0.0.1:{{.Port}}). A t.Cleanup stops it (SIGTERM, SIGKILL after 5 s) and logs
// its output's tail when the test failed.
func Start(tb testing.TB, cfg Config) *Instance {
	tb.Helper()
	if cfg.Modules == nil {
		cfg.Modules = []string{"msrp.so"}
	}
	bin := findBinary(tb, DefaultModPath, cfg.Modules...)
	k, err := launch(bin, cfg, func(k *Instance) (string, error) {
		tb.Cleanup(func() {
			k.stop()
			if tb.Failed() {
				tb.Logf("kamailio log (last 40 lines of %s):\n%s", k.logPath, k.LogTail(40))
			}
		})
		return tb.TempDir(), nil
	}, tb.Logf)
	if err != nil {
		tb.Fatalf("kamailio: %v", err)
	}
	return k
}

// Launch is Start outside a test: it finds the binary and the modules
// (an error when missing), runs Kamailio in a new temporary directory and
// returns when its port accepts connections. The caller must call Stop,
// which also removes the directory.
func Launch(cfg Config) (*Instance, error) {
	if cfg.Modules == nil {
		cfg.Modules = []string{"msrp.so"}
	}
	bin, err := LookBinary(DefaultModPath, cfg.Modules...)
	if err != nil {
		return nil, err
	}
	return launch(bin, cfg, func(k *Instance) (string, error) {
		dir, err := os.MkdirTemp(cfg.ParentDir, "kamailio-")
		if cfg.ParentDir == "" {
			k.removeDir = dir
		}
		return dir, err
	}, func(string, ...any) {})
}

// Stop ends a Launched instance (SIGTERM, SIGKILL to its process group
// after 5 s) and removes its directory unless Config.ParentDir was set.
func (k *Instance) Stop() {
	k.stop()
	if k.removeDir != "" {
		_ = os.RemoveAll(k.removeDir)
	}
}

// Pid returns the main process's id; its worker processes are its children.
func (k *Instance) Pid() int { return k.proc.Pid() }

// Dir returns the instance's directory (config, log, ctl socket).
func (k *Instance) Dir() string { return k.dir }

// launch starts the process with up to three ports (a taken port is
// retried); prepare registers the instance's cleanup and returns its
// directory, once per attempt.
func launch(bin string, cfg Config, prepare func(*Instance) (string, error), logf func(string, ...any)) (*Instance, error) {
	if cfg.Template == nil {
		cfg.Template = Template
	}
	if cfg.Password == "" {
		cfg.Password = Password
	}
	if cfg.Children <= 0 {
		cfg.Children = 2
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	if cfg.SharedMemMB <= 0 {
		cfg.SharedMemMB = 64
	}
	if cfg.PkgMemMB <= 0 {
		cfg.PkgMemMB = 8
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		k, err := start(bin, cfg, prepare)
		if err == nil {
			return k, nil
		}
		if k != nil && k.removeDir != "" {
			_ = os.RemoveAll(k.removeDir)
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
		logf("kamailio: port taken, retrying (%v)", err)
	}
	return nil, lastErr
}

var errBind = errors.New("could not bind the port")

// start runs one attempt. Once prepare has run it returns the Instance
// even with an error (stopped, its exited channel closed), so that the
// caller can remove its directory.
func start(bin string, cfg Config, prepare func(*Instance) (string, error)) (*Instance, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	k := &Instance{port: port, exited: make(chan struct{})}
	dir, err := prepare(k)
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	k.dir = dir
	k.cfgPath = filepath.Join(dir, "kamailio.cfg")
	k.logPath = filepath.Join(dir, "kamailio.log")
	var buf bytes.Buffer
	err = cfg.Template.Execute(&buf, TemplateData{
		Port:           port,
		Dir:            dir,
		CtlSocket:      filepath.Join(dir, "ctl.sock"),
		ModPath:        DefaultModPath,
		Realm:          Realm,
		Password:       cfg.Password,
		Children:       cfg.Children,
		TCPReadBufSize: cfg.TCPReadBufSize,
		ExtraGlobals:   cfg.ExtraGlobals,
		ExtraModules:   cfg.ExtraModules,
		ExtraRoute:     cfg.ExtraRoute,
		Vars:           cfg.Vars,
	})
	if err != nil {
		close(k.exited) // nothing to stop
		return k, fmt.Errorf("config template: %w", err)
	}
	if err := os.WriteFile(k.cfgPath, buf.Bytes(), 0o600); err != nil {
		close(k.exited)
		return k, fmt.Errorf("writing config: %w", err)
	}
	logf, err := os.Create(k.logPath)
	if err != nil {
		close(k.exited)
		return k, fmt.Errorf("creating log: %w", err)
	}
	// -DD: no daemon, -E: log to stderr, -w: working dir; -m/-M: shared
	// and private memory in MB.
	cmd := exec.Command(bin, "-f", k.cfgPath, "-DD", "-E", "-w", dir,
		"-m", strconv.Itoa(cfg.SharedMemMB), "-M", strconv.Itoa(cfg.PkgMemMB))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	// The waiter goroutine is owned by the Instance: it ends when the
	// process exits, which the cleanup prepare registered (or Stop)
	// guarantees.
	p, err := proc.Start(cmd, func() {
		logf.Close()
		close(k.exited)
	})
	if err != nil {
		logf.Close()
		close(k.exited) // nothing to stop
		return k, err
	}
	k.proc = p
	if err := proc.WaitTCP(context.Background(), k.Addr(), k.exited, cfg.StartTimeout); err != nil {
		err = fmt.Errorf("kamailio %w", err)
		k.stop()
		log := k.Log()
		if strings.Contains(log, "Address already in use") || strings.Contains(log, "bind(") {
			return k, fmt.Errorf("%w %d: %v", errBind, port, err)
		}
		return k, fmt.Errorf("%v; log tail:\n%s", err, proc.Tail(log, 40))
	}
	return k, nil
}

// stop sends SIGTERM to the process (Kamailio stops its children), then
// SIGKILL to its process group if it has not exited within 5 s.
func (k *Instance) stop() {
	if k.proc != nil {
		k.proc.Stop(5 * time.Second)
	}
}
