package dashboards

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Var is a template variable's state when a query runs: All selected (with the variable's
// custom all value, if any), or the selected values.
type Var struct {
	All      bool
	AllValue string   // custom all value; "" = none (All stands for every option)
	Values   []string // selected values; with All and no AllValue, every option
}

// Range is the dashboard's time range and the panel's interval.
type Range struct {
	From, To time.Time
	Interval time.Duration
}

// ExpandSQL does what Grafana and the ClickHouse plugin (v4.10+) do to a SQL target before it
// reaches ClickHouse: $__conditionalAll(cond, $var) (1=1 when var is All, else cond), the time
// macros with the expansions of the plugin's documentation, then template variables
// ($name, ${name}, ${name:format}, [[name]]). An unknown macro or variable is an error.
func ExpandSQL(sql string, r Range, vars map[string]Var) (string, error) {
	sql, err := expandConditionalAll(sql, vars)
	if err != nil {
		return "", err
	}
	if sql, err = expandMacros(sql, r); err != nil {
		return "", err
	}
	return expandVars(sql, vars)
}

// ExpandPromQL does what Grafana does to a Prometheus target: $__rate_interval, $__interval and
// $__range become durations, then template variables.
func ExpandPromQL(expr string, rateInterval, interval, rng time.Duration, vars map[string]Var) (string, error) {
	d := func(x time.Duration) string { return strconv.FormatInt(int64(x/time.Second), 10) + "s" }
	expr = strings.NewReplacer("$__rate_interval", d(rateInterval), "$__interval", d(interval), "$__range", d(rng)).Replace(expr)
	if i := strings.Index(expr, "$__"); i >= 0 {
		return "", fmt.Errorf("unknown macro at %q", expr[i:])
	}
	return expandVars(expr, vars)
}

var macroName = regexp.MustCompile(`^\$__([A-Za-z_]+)`)

// call is a macro at s[start:end] with its name and arguments (args nil: no parentheses).
type call struct {
	start, end int
	name       string
	args       []string
}

// nextMacro finds the next $__name or $__name(args) at or after from.
func nextMacro(s string, from int) (call, bool, error) {
	i := strings.Index(s[from:], "$__")
	if i < 0 {
		return call{}, false, nil
	}
	start := from + i
	m := macroName.FindStringSubmatch(s[start:])
	if m == nil {
		return call{}, false, fmt.Errorf("bad macro at %q", s[start:])
	}
	c := call{start: start, end: start + len(m[0]), name: m[1]}
	if c.end < len(s) && s[c.end] == '(' {
		depth, argStart := 0, c.end+1
		quoted := false
		for j := c.end; j < len(s); j++ {
			switch ch := s[j]; {
			case ch == '\'' && (j == 0 || s[j-1] != '\\'):
				quoted = !quoted
			case quoted:
			case ch == '(':
				depth++
			case ch == ')':
				depth--
				if depth == 0 {
					c.args = append(c.args, strings.TrimSpace(s[argStart:j]))
					c.end = j + 1
					return c, true, nil
				}
			case ch == ',' && depth == 1:
				c.args = append(c.args, strings.TrimSpace(s[argStart:j]))
				argStart = j + 1
			}
		}
		return call{}, false, fmt.Errorf("unclosed macro %s(", c.name)
	}
	return c, true, nil
}

var varRef = regexp.MustCompile(`^\$\{?([A-Za-z_]\w*)\}?$`)

func expandConditionalAll(s string, vars map[string]Var) (string, error) {
	var b strings.Builder
	pos := 0
	for from := 0; ; {
		c, ok, err := nextMacro(s, from)
		if err != nil {
			return "", err
		}
		if !ok {
			break
		}
		from = c.end
		if c.name != "conditionalAll" {
			continue
		}
		// The plugin leaves the macro alone (and the query then fails) unless it has exactly two
		// arguments, split at commas outside parentheses before variables are substituted.
		if len(c.args) != 2 {
			return "", fmt.Errorf("$__conditionalAll needs (condition, $variable): %q", s[c.start:c.end])
		}
		name := varRef.FindStringSubmatch(c.args[1])
		if name == nil {
			return "", fmt.Errorf("$__conditionalAll: %q is not a plain variable reference", c.args[1])
		}
		v, ok := vars[name[1]]
		if !ok {
			return "", fmt.Errorf("$__conditionalAll: unknown variable %s", name[1])
		}
		b.WriteString(s[pos:c.start])
		if v.All {
			b.WriteString("1=1")
		} else {
			b.WriteString(c.args[0])
		}
		pos = c.end
	}
	b.WriteString(s[pos:])
	return b.String(), nil
}

func expandMacros(s string, r Range) (string, error) {
	from, to := r.From.Unix(), r.To.Unix()
	fromMs, toMs := r.From.UnixMilli(), r.To.UnixMilli()
	secs := max(int64(r.Interval/time.Second), 1)
	ms := max(r.Interval.Milliseconds(), 1)
	dt := func(u int64) string { return "toDateTime(" + strconv.FormatInt(u, 10) + ")" }
	milli := func(u int64) string { return "fromUnixTimestamp64Milli(" + strconv.FormatInt(u, 10) + ")" }
	date := func(t time.Time) string { return "toDate('" + t.UTC().Format("2006-01-02") + "')" }
	var b strings.Builder
	pos := 0
	for {
		c, ok, err := nextMacro(s, pos)
		if err != nil {
			return "", err
		}
		if !ok {
			break
		}
		b.WriteString(s[pos:c.start])
		col := ""
		if len(c.args) == 1 {
			col = c.args[0]
		}
		withCol := map[string]string{
			"timeFilter":      col + " >= " + dt(from) + " AND " + col + " <= " + dt(to),
			"timeFilter_ms":   col + " >= " + milli(fromMs) + " AND " + col + " <= " + milli(toMs),
			"dateFilter":      col + " >= " + date(r.From) + " AND " + col + " <= " + date(r.To),
			"timeFrom":        col + " >= " + dt(from),
			"timeTo":          col + " <= " + dt(to),
			"timeInterval":    "toStartOfInterval(toDateTime(" + col + "), INTERVAL " + strconv.FormatInt(secs, 10) + " second)",
			"timeInterval_ms": "toStartOfInterval(toDateTime64(" + col + ", 3), INTERVAL " + strconv.FormatInt(ms, 10) + " millisecond)",
		}
		bare := map[string]string{
			"fromTime": dt(from), "toTime": dt(to), "fromTime_ms": milli(fromMs), "toTime_ms": milli(toMs),
			"interval_s": strconv.FormatInt(secs, 10),
		}
		if e, ok := withCol[c.name]; ok {
			if len(c.args) != 1 || col == "" {
				return "", fmt.Errorf("$__%s takes one column, got %q", c.name, c.args)
			}
			b.WriteString(e)
		} else if e, ok := bare[c.name]; ok {
			if c.args != nil {
				return "", fmt.Errorf("$__%s takes no arguments", c.name)
			}
			b.WriteString(e)
		} else {
			return "", fmt.Errorf("unknown macro $__%s", c.name)
		}
		pos = c.end
	}
	b.WriteString(s[pos:])
	return b.String(), nil
}

var varUse = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::(\w+))?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)\]\]`)

// expandVars substitutes template variables as Grafana's template service does for the formats
// used here: raw (the default for one value), singlequote ('v', ' escaped as \'), csv.
// A custom all value is inserted as it is, unformatted (Grafana skips formatting it).
func expandVars(s string, vars map[string]Var) (string, error) {
	var err error
	out := varUse.ReplaceAllStringFunc(s, func(m string) string {
		sub := varUse.FindStringSubmatch(m)
		name, fmtName := sub[1]+sub[3]+sub[4], sub[2]
		if strings.HasPrefix(name, "__") {
			err = fmt.Errorf("unexpanded macro %s", m)
			return m
		}
		v, ok := vars[name]
		if !ok {
			err = fmt.Errorf("unknown variable %s", m)
			return m
		}
		if v.All && v.AllValue != "" {
			return v.AllValue
		}
		switch fmtName {
		case "", "raw":
			if len(v.Values) != 1 {
				err = fmt.Errorf("%s: %d values need a format (singlequote, csv)", m, len(v.Values))
				return m
			}
			return v.Values[0]
		case "singlequote":
			q := make([]string, len(v.Values))
			for i, x := range v.Values {
				q[i] = "'" + strings.ReplaceAll(x, "'", `\'`) + "'"
			}
			return strings.Join(q, ",")
		case "csv":
			return strings.Join(v.Values, ",")
		}
		err = fmt.Errorf("%s: format %s not handled", m, fmtName)
		return m
	})
	return out, err
}
