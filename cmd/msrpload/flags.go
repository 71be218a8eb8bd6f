package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
)

// sizeUnits are the suffixes -size and -chunk accept, case-insensitively:
// decimal (KB = 1000) and binary (KiB = 1024).
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"k", 1000}, {"m", 1000 * 1000}, {"g", 1000 * 1000 * 1000},
	{"b", 1},
}

// parseSize parses "100", "64KiB", "10MB", "1.5MiB" into bytes.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt32/mult {
			return 0, fmt.Errorf("size %q out of range", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) > math.MaxInt32 {
		return 0, fmt.Errorf("size %q: want a number with an optional KB, KiB, MB, MiB, GB or GiB", s)
	}
	return int64(f * float64(mult)), nil
}

// parseUsers parses "name[:password],..." ; a user without a password
// gets def.
func parseUsers(s, def string) ([]load.User, error) {
	var us []load.User
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		name, pw, hasPW := strings.Cut(item, ":")
		if name == "" {
			return nil, fmt.Errorf("empty user name in %q", s)
		}
		if !hasPW {
			pw = def
		}
		us = append(us, load.User{Name: name, Password: pw})
	}
	return us, nil
}

// parseRate parses "5000" or "5000/s" (messages per second; 0 = as fast as possible).
func parseRate(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, errors.New("want messages per second, such as 5000 or 5000/s")
	}
	return f, nil
}
