package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/msrpscope/msrpscope/internal/testenv"
)

const unitPath = "internal/deploy/systemd/msrpscope.service"

// unit is a parsed systemd unit file: section → key → values in order (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(src string) (unit, error) {
	u := unit{}
	section := ""
	var cont string
	for i, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if cont != "" {
			line = cont + line
			cont = ""
		}
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\") + " "
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is not key=value in a section", i+1, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u, nil
}

// last is the effective value of a key that does not accumulate.
func (u unit) last(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// hardening are the [Service] keys the unit must set, with their value.
var hardening = map[string]string{
	"NoNewPrivileges":        "yes",
	"ProtectSystem":          "strict",
	"ProtectHome":            "yes",
	"PrivateTmp":             "yes",
	"PrivateDevices":         "yes",
	"ProtectKernelTunables":  "yes",
	"ProtectKernelModules":   "yes",
	"ProtectKernelLogs":      "yes",
	"ProtectControlGroups":   "yes",
	"RestrictNamespaces":     "yes",
	"LockPersonality":        "yes",
	"MemoryDenyWriteExecute": "yes",
	"DynamicUser":            "yes",
	"Restart":                "on-failure",
}

func checkUnit(src string) []error {
	u, err := parseUnit(src)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			errs = append(errs, fmt.Errorf("no [%s] section", s))
		}
	}
	if u["Service"] == nil {
		return errs
	}
	for _, k := range sortedKeys(hardening) {
		if v, _ := u.last("Service", k); v != hardening[k] {
			errs = append(errs, fmt.Errorf("%s=%q, want %q", k, v, hardening[k]))
		}
	}
	if t, _ := u.last("Service", "Type"); t != "exec" && t != "simple" {
		errs = append(errs, fmt.Errorf("Type=%q, want exec or simple", t))
	}
	// RestrictAddressFamilies: exactly IPv4, IPv6 and Unix sockets (an empty assignment resets).
	var fams []string
	for _, v := range u["Service"]["RestrictAddressFamilies"] {
		if v == "" {
			fams = nil
		}
		fams = append(fams, strings.Fields(v)...)
	}
	slices.Sort(fams)
	if !slices.Equal(fams, []string{"AF_INET", "AF_INET6", "AF_UNIX"}) {
		errs = append(errs, fmt.Errorf("RestrictAddressFamilies %v, want AF_INET AF_INET6 AF_UNIX", fams))
	}
	if sc := u["Service"]["SystemCallFilter"]; !slices.Contains(sc, "@system-service") {
		errs = append(errs, fmt.Errorf("SystemCallFilter %q lacks @system-service", sc))
	}
	// No capabilities, unless binding below 1024 with exactly CAP_NET_BIND_SERVICE.
	bound, _ := u.last("Service", "CapabilityBoundingSet")
	ambient, _ := u.last("Service", "AmbientCapabilities")
	if _, ok := u.last("Service", "CapabilityBoundingSet"); !ok {
		errs = append(errs, fmt.Errorf("no CapabilityBoundingSet (want it empty)"))
	} else if bound != "" && !(bound == "CAP_NET_BIND_SERVICE" && ambient == "CAP_NET_BIND_SERVICE") {
		errs = append(errs, fmt.Errorf("CapabilityBoundingSet=%q AmbientCapabilities=%q: empty, or CAP_NET_BIND_SERVICE in both", bound, ambient))
	}
	if ambient != "" && ambient != bound {
		errs = append(errs, fmt.Errorf("AmbientCapabilities=%q outside the bounding set %q", ambient, bound))
	}
	if r, _ := u.last("Service", "ExecReload"); !strings.Contains(r, "kill -HUP $MAINPID") {
		errs = append(errs, fmt.Errorf("ExecReload=%q, want kill -HUP $MAINPID (SIGHUP reloads)", r))
	}
	if n, _ := u.last("Service", "LimitNOFILE"); n != "infinity" {
		if v, err := strconv.Atoi(n); err != nil || v < 16384 {
			errs = append(errs, fmt.Errorf("LimitNOFILE=%q: too few for relay.limits.max_connections (10000)", n))
		}
	}
	state, _ := u.last("Service", "StateDirectory")
	if state == "" {
		errs = append(errs, fmt.Errorf("no StateDirectory: with ProtectSystem=strict the relay could write nowhere"))
	} else if wd, _ := u.last("Service", "WorkingDirectory"); wd != "/var/lib/"+state {
		errs = append(errs, fmt.Errorf("WorkingDirectory=%q, want the state directory /var/lib/%s (the default pcap sink writes to .)", wd, state))
	}
	// ExecStart runs msrpscope on a config file, and ExecStartPre checks that file first.
	start, _ := u.last("Service", "ExecStart")
	f := strings.Fields(start)
	cfg := ""
	if i := slices.Index(f, "-config"); i >= 0 && i+1 < len(f) {
		cfg = f[i+1]
	}
	if len(f) == 0 || !strings.HasPrefix(f[0], "/") || filepath.Base(f[0]) != "msrpscope" || cfg == "" {
		errs = append(errs, fmt.Errorf("ExecStart=%q, want /absolute/path/msrpscope -config FILE", start))
	}
	if pre, _ := u.last("Service", "ExecStartPre"); cfg != "" && !strings.Contains(pre, "-check-config "+cfg) {
		errs = append(errs, fmt.Errorf("ExecStartPre=%q does not check %s", pre, cfg))
	}
	if w, _ := u.last("Install", "WantedBy"); w != "multi-user.target" {
		errs = append(errs, fmt.Errorf("WantedBy=%q", w))
	}
	return errs
}

func TestSystemdUnit(t *testing.T) {
	src := string(readFile(t, unitPath))
	for _, e := range checkUnit(src) {
		t.Error(e)
	}
	tests := []struct{ name, old, new, want string }{
		{"no NoNewPrivileges", "NoNewPrivileges=yes\n", "", "NoNewPrivileges"},
		{"ProtectSystem full", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"address family", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "RestrictAddressFamilies"},
		{"capabilities", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "CapabilityBoundingSet"},
		{"no bounding set", "CapabilityBoundingSet=\n", "", "no CapabilityBoundingSet"},
		{"reload", "ExecReload=/bin/kill -HUP $MAINPID", "ExecReload=/bin/kill -USR1 $MAINPID", "ExecReload"},
		{"syscalls", "SystemCallFilter=@system-service", "SystemCallFilter=@basic-io", "SystemCallFilter"},
		{"few files", "LimitNOFILE=65536", "LimitNOFILE=1024", "LimitNOFILE"},
		{"no config", "ExecStart=/usr/local/bin/msrpscope -config /etc/msrpscope/msrpscope.yaml", "ExecStart=/usr/local/bin/msrpscope", "ExecStart"},
		{"other binary", "ExecStart=/usr/local/bin/msrpscope -config", "ExecStart=/usr/local/bin/msrpload -config", "ExecStart"},
		{"unchecked config", "ExecStartPre=/usr/local/bin/msrpscope -check-config /etc/msrpscope/msrpscope.yaml", "ExecStartPre=/usr/local/bin/msrpscope -check-config /etc/msrpscope/other.yaml", "ExecStartPre"},
		{"no restart", "Restart=on-failure", "Restart=no", "Restart"},
		{"working dir", "WorkingDirectory=/var/lib/msrpscope", "WorkingDirectory=/tmp", "WorkingDirectory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Count(src, tt.old) != 1 {
				t.Fatalf("%q does not occur once", tt.old)
			}
			errs := checkUnit(strings.Replace(src, tt.old, tt.new, 1))
			for _, e := range errs {
				if strings.Contains(e.Error(), tt.want) {
					return
				}
			}
			t.Errorf("no error containing %q; got %v", tt.want, errs)
		})
	}
}

// analyze runs systemd-analyze verify on the unit with its binary path moved to bin; it
// returns the lines that speak of the unit (verify exits 0 on unknown keys, only warning).
func analyze(t *testing.T, sa, bin, src string) ([]string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msrpscope.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(src, "/usr/local/bin/msrpscope", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	var about []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "msrpscope.service") {
			about = append(about, sc.Text())
		}
	}
	return about, err
}

// TestSystemdAnalyzeVerify has systemd check the unit (where systemd-analyze is installed):
// every key known, the binary executable, the unit loadable.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Missing(t, "systemd-analyze not found (apt-get install systemd)")
	}
	bin := msrpscopeBinary(t)
	src := string(readFile(t, unitPath))
	if lines, err := analyze(t, sa, bin, src); err != nil || len(lines) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(lines, "\n"))
	}
	// It can fail: a misspelt key and a missing binary are reported.
	if lines, _ := analyze(t, sa, bin, strings.Replace(src, "ProtectHome=yes", "ProtectHomes=yes", 1)); len(lines) == 0 {
		t.Error("systemd-analyze verify did not report a misspelt key")
	}
	if lines, err := analyze(t, sa, bin+"-missing", src); err == nil && len(lines) == 0 {
		t.Error("systemd-analyze verify did not report a missing binary")
	}
}
