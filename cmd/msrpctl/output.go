package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	}
	return t
}

// row writes one line; an empty cell shows as "-".
func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
		cols[i] = strings.Map(func(r rune) rune { // a cell stays one cell
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, cols[i])
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeRawJSON re-indents a JSON answer of the API.
func writeRawJSON(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(b), "", "  "); err != nil {
		return fmt.Errorf("the admin API answered bad JSON: %v", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func num[T ~int | ~int64 | ~uint64 | ~uint16 | ~int32](n T) string { return fmt.Sprint(n) }

// age is how long ago t was, in whole seconds.
func age(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return now.Sub(t).Truncate(time.Second).String()
}

// until is how long until t, in whole seconds ("expired" when past).
func until(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now).Truncate(time.Second)
	if d < 0 {
		return "expired"
	}
	return d.String()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
