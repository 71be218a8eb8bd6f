package deploy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(src string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("Dockerfile ends in a continuation line")
	}
	known := []string{"FROM", "RUN", "COPY", "ADD", "WORKDIR", "USER", "ENV", "ARG", "EXPOSE", "VOLUME", "HEALTHCHECK", "ENTRYPOINT", "CMD", "STOPSIGNAL", "LABEL", "SHELL", "ONBUILD"}
	for _, in := range out {
		if !slices.Contains(known, in.cmd) {
			return nil, fmt.Errorf("Dockerfile line %d: unknown instruction %s", in.line, in.cmd)
		}
	}
	return out, nil
}

// dockerignored says whether rel (slash-separated, relative to the context) is excluded by
// the .dockerignore patterns (path.Match per pattern; "**/" matches any depth; a pattern
// excludes what lies under a matching folder; "!" re-includes).
func dockerignored(patterns []string, rel string) bool {
	ignored := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if matchIgnore(p, rel) {
			ignored = !neg
		}
	}
	return ignored
}

func matchIgnore(p, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		if ok, _ := path.Match(p, prefix); ok {
			return true
		}
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			for j := 0; j <= i; j++ {
				if ok, _ := path.Match(rest, strings.Join(parts[j:i+1], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func parseIgnore(src string) []string {
	var ps []string
	for _, l := range strings.Split(src, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			ps = append(ps, strings.TrimPrefix(path.Clean(l), "/"))
		}
	}
	return ps
}

var goDirective = regexp.MustCompile(`(?m)^go ([0-9]+\.[0-9]+)`)

// checkDockerfile: stages on pinned images, COPY sources that exist and are in the build
// context, a static build of ./cmd/... with a Go no older than go.mod's, a non-root runtime
// with the relay's ports, a health check through /healthz, and msrpscope as the entry point.
func checkDockerfile(src, ignore, gomod string, exists func(string) (bool, bool)) []error {
	ins, err := parseDockerfile(src)
	if err != nil {
		return []error{err}
	}
	var errs []error
	stages := []string{}
	last := -1
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 0 {
		return []error{fmt.Errorf("no FROM")}
	}
	ignored := parseIgnore(ignore)
	var user, entry string
	var build string
	exposed := map[string]bool{}
	health := ""
	for i, in := range ins {
		f := strings.Fields(in.args)
		switch in.cmd {
		case "FROM":
			if len(f) == 0 {
				errs = append(errs, fmt.Errorf("line %d: FROM without image", in.line))
				continue
			}
			img := f[0]
			if !slices.Contains(stages, img) {
				if why := imagePinned(img); why != "" {
					errs = append(errs, fmt.Errorf("line %d: base image %s: %s", in.line, img, why))
				}
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages = append(stages, f[2])
			} else if i != last {
				errs = append(errs, fmt.Errorf("line %d: a build stage without a name", in.line))
			}
			if strings.HasPrefix(img, "golang:") {
				want := goDirective.FindStringSubmatch(gomod)
				tag := strings.TrimPrefix(img, "golang:")
				if want == nil || !versionAtLeast(tag, want[1]) {
					errs = append(errs, fmt.Errorf("line %d: %s is older than go.mod's go %v", in.line, img, want))
				}
			}
		case "COPY", "ADD":
			from := ""
			var srcs []string
			for _, a := range f {
				if v, ok := strings.CutPrefix(a, "--from="); ok {
					from = v
				} else if !strings.HasPrefix(a, "--") {
					srcs = append(srcs, a)
				}
			}
			if len(srcs) < 2 {
				errs = append(errs, fmt.Errorf("line %d: %s needs a source and a destination", in.line, in.cmd))
				continue
			}
			if from != "" {
				if !slices.Contains(stages, from) {
					errs = append(errs, fmt.Errorf("line %d: COPY --from=%s: no earlier stage of that name", in.line, from))
				}
				continue
			}
			for _, s := range srcs[:len(srcs)-1] {
				rel := strings.TrimPrefix(path.Clean(s), "./")
				if rel == "." {
					continue
				}
				if _, ok := exists(rel); !ok {
					errs = append(errs, fmt.Errorf("line %d: COPY source %s does not exist", in.line, s))
				} else if dockerignored(ignored, rel) {
					errs = append(errs, fmt.Errorf("line %d: COPY source %s is excluded by .dockerignore", in.line, s))
				}
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				build = in.args
			}
		case "USER":
			if i > last {
				user = in.args
			}
		case "EXPOSE":
			for _, p := range f {
				exposed[p] = true
			}
		case "HEALTHCHECK":
			health = in.args
		case "ENTRYPOINT":
			entry = in.args
		}
	}
	switch {
	case build == "":
		errs = append(errs, fmt.Errorf("no RUN go build"))
	case !strings.Contains(build, "CGO_ENABLED=0"):
		errs = append(errs, fmt.Errorf("go build is not static (CGO_ENABLED=0)"))
	case !strings.Contains(build, "./cmd/..."):
		errs = append(errs, fmt.Errorf("go build does not build ./cmd/..."))
	}
	// The binaries the image promises come from folders that exist.
	for _, c := range []string{"cmd/msrpscope", "cmd/msrpload"} {
		if dir, ok := exists(c); !ok || !dir {
			errs = append(errs, fmt.Errorf("%s missing: the image would lack it", c))
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		errs = append(errs, fmt.Errorf("the runtime stage runs as %q, want a non-root user", user))
	}
	for _, p := range []string{"2855", "2856", "8055"} {
		if !exposed[p] {
			errs = append(errs, fmt.Errorf("port %s not exposed", p))
		}
	}
	if !strings.Contains(health, "/healthz") || !strings.Contains(health, "8055") {
		errs = append(errs, fmt.Errorf("HEALTHCHECK %q does not ask /healthz on the admin port", health))
	}
	if !strings.Contains(entry, `"/usr/local/bin/msrpscope"`) {
		errs = append(errs, fmt.Errorf("ENTRYPOINT %q is not msrpscope", entry))
	}
	return errs
}

// versionAtLeast compares the leading numeric parts of a tag (1.26.8-trixie) with want (1.26).
func versionAtLeast(tag, want string) bool {
	num := func(s string) []int {
		s, _, _ = strings.Cut(s, "-")
		var n []int
		for _, p := range strings.Split(s, ".") {
			var x int
			if _, err := fmt.Sscanf(p, "%d", &x); err != nil {
				return nil
			}
			n = append(n, x)
		}
		return n
	}
	a, b := num(tag), num(want)
	if a == nil || b == nil {
		return false
	}
	for i := range b {
		if i >= len(a) || a[i] < b[i] {
			return false
		}
		if a[i] > b[i] {
			return true
		}
	}
	return true
}

func TestDockerfile(t *testing.T) {
	src := string(readFile(t, "Dockerfile"))
	ignore := string(readFile(t, ".dockerignore"))
	gomod := string(readFile(t, "go.mod"))
	for _, e := range checkDockerfile(src, ignore, gomod, repoExists) {
		t.Error(e)
	}

	tests := []struct {
		name     string
		file     string // "Dockerfile" or ".dockerignore"
		old, new string
		want     string
	}{
		{"unpinned base", "Dockerfile", "FROM debian:13.1-slim", "FROM debian:bookworm-slim", `tag "bookworm-slim" is not a version`},
		{"latest builder", "Dockerfile", "FROM golang:1.26.8 AS build", "FROM golang AS build", "no tag"},
		{"old go", "Dockerfile", "FROM golang:1.26.8 AS build", "FROM golang:1.22.5 AS build", "older than go.mod"},
		{"missing source", "Dockerfile", "COPY go.mod go.sum ./", "COPY go.mod go.sum go.work ./", "go.work does not exist"},
		{"ignored source", ".dockerignore", ".git\n", ".git\ngo.sum\n", "go.sum is excluded"},
		{"ignored by glob", ".dockerignore", ".git\n", ".git\n**/*.mod\n", "go.mod is excluded"},
		{"unknown stage", "Dockerfile", "COPY --from=build /out/", "COPY --from=builder /out/", "no earlier stage"},
		{"cgo", "Dockerfile", "CGO_ENABLED=0 GOOS=linux go build", "GOOS=linux go build", "not static"},
		{"root", "Dockerfile", "USER msrpscope:msrpscope", "USER root", "non-root"},
		{"no user", "Dockerfile", "USER msrpscope:msrpscope\n", "", "non-root"},
		{"port", "Dockerfile", "EXPOSE 2855 2856 8055", "EXPOSE 2855 8055", "port 2856 not exposed"},
		{"healthcheck", "Dockerfile", "printf 'GET /healthz", "printf 'GET /metrics", "does not ask /healthz"},
		{"entrypoint", "Dockerfile", `ENTRYPOINT ["/usr/local/bin/msrpscope"]`, `ENTRYPOINT ["/usr/local/bin/msrpload"]`, "is not msrpscope"},
		{"typo", "Dockerfile", "WORKDIR /src", "WORKDR /src", "unknown instruction WORKDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ig := src, ignore
			p := &s
			if tt.file == ".dockerignore" {
				p = &ig
			}
			if strings.Count(*p, tt.old) != 1 {
				t.Fatalf("%q does not occur once in %s", tt.old, tt.file)
			}
			*p = strings.Replace(*p, tt.old, tt.new, 1)
			errs := checkDockerfile(s, ig, gomod, repoExists)
			for _, e := range errs {
				if strings.Contains(e.Error(), tt.want) {
					return
				}
			}
			t.Errorf("no error containing %q; got %v", tt.want, errs)
		})
	}
}
