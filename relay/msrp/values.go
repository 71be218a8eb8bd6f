package msrp

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrValue is wrapped by every header value parse error of this file.
var ErrValue = errors.New("msrp: malformed header value")

func valueErr(name string, v []byte, why string) error {
	return fmt.Errorf("%w: %s %q: %s", ErrValue, name, truncate(v, 64), why)
}

// ByteRange is a Byte-Range value (RFC 4975 §7.1.1, §9):
//
//	Byte-Range = range-start "-" range-end "/" total
//	range-end = 1*DIGIT / "*";  total = 1*DIGIT / "*"
//
// End and Total are -1 for "*". Start counts from 1.
type ByteRange struct {
	Start, End, Total int64
}

// Unknown marks a "*" range end or total.
const Unknown = -1

// maxRangeDigits keeps values inside int64.
const maxRangeDigits = 18

// ParseByteRange parses a Byte-Range value. It checks 1 <= Start,
// Start-1 <= End (End = Start-1 is an empty chunk) and End <= Total where
// both are known.
func ParseByteRange(v []byte) (ByteRange, error) {
	var br ByteRange
	dash := indexByte(v, '-')
	slash := indexByte(v, '/')
	if dash <= 0 || slash < dash+2 || slash == len(v)-1 {
		return br, valueErr(HdrByteRange, v, "want start-end/total")
	}
	var ok bool
	if br.Start, ok = parseDigits(v[:dash]); !ok || br.Start < 1 {
		return br, valueErr(HdrByteRange, v, "bad range-start")
	}
	if br.End, ok = parseDigitsOrStar(v[dash+1 : slash]); !ok {
		return br, valueErr(HdrByteRange, v, "bad range-end")
	}
	if br.Total, ok = parseDigitsOrStar(v[slash+1:]); !ok {
		return br, valueErr(HdrByteRange, v, "bad total")
	}
	if br.End != Unknown && br.End < br.Start-1 {
		return br, valueErr(HdrByteRange, v, "range-end before range-start")
	}
	if br.Total != Unknown && br.End != Unknown && br.End > br.Total {
		return br, valueErr(HdrByteRange, v, "range-end beyond total")
	}
	if br.Total != Unknown && br.Start > br.Total+1 {
		return br, valueErr(HdrByteRange, v, "range-start beyond total")
	}
	return br, nil
}

// Append appends the Byte-Range text form to dst.
func (br ByteRange) Append(dst []byte) []byte {
	dst = strconv.AppendInt(dst, br.Start, 10)
	dst = append(dst, '-')
	dst = appendDigitsOrStar(dst, br.End)
	dst = append(dst, '/')
	return appendDigitsOrStar(dst, br.Total)
}

func (br ByteRange) String() string { return string(br.Append(nil)) }

func appendDigitsOrStar(dst []byte, n int64) []byte {
	if n == Unknown {
		return append(dst, '*')
	}
	return strconv.AppendInt(dst, n, 10)
}

func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > maxRangeDigits {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func parseDigitsOrStar(b []byte) (int64, bool) {
	if len(b) == 1 && b[0] == '*' {
		return Unknown, true
	}
	return parseDigits(b)
}

// Status is a Status header value (RFC 4975 §9):
//
//	Status = namespace SP status-code [SP text-reason]
//
// Namespace is "000" for the codes of RFC 4975.
type Status struct {
	Namespace int
	Code      int
	Reason    string
}

// ParseStatus parses a Status value such as "000 200 OK".
func ParseStatus(v []byte) (Status, error) {
	var s Status
	if len(v) < 7 || v[3] != ' ' || (len(v) > 7 && v[7] != ' ') {
		return s, valueErr(HdrStatus, v, "want 3DIGIT SP 3DIGIT [SP reason]")
	}
	ns, ok1 := parseDigits(v[:3])
	code, ok2 := parseDigits(v[4:7])
	if !ok1 || !ok2 || code < 100 {
		return s, valueErr(HdrStatus, v, "want 3DIGIT SP 3DIGIT [SP reason]")
	}
	s.Namespace, s.Code = int(ns), int(code)
	if len(v) > 8 {
		if !validText(v[8:]) {
			return s, valueErr(HdrStatus, v, "control character in reason")
		}
		s.Reason = string(v[8:])
	}
	return s, nil
}

// Append appends the Status text form to dst.
func (s Status) Append(dst []byte) []byte {
	dst = append3(dst, s.Namespace)
	dst = append(dst, ' ')
	dst = append3(dst, s.Code)
	if s.Reason != "" {
		dst = append(dst, ' ')
		dst = append(dst, s.Reason...)
	}
	return dst
}

func (s Status) String() string { return string(s.Append(nil)) }

func append3(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

// ReportMode is a Success-Report or Failure-Report value.
type ReportMode uint8

const (
	ReportNo ReportMode = iota
	ReportYes
	ReportPartial // Failure-Report only
)

func (m ReportMode) String() string {
	switch m {
	case ReportYes:
		return "yes"
	case ReportPartial:
		return "partial"
	}
	return "no"
}

// ParseSuccessReport parses a Success-Report value; an absent header (nil)
// means "no" (RFC 4975 §7.1.1). Values compare case-insensitively.
func ParseSuccessReport(v []byte) (ReportMode, error) {
	switch {
	case v == nil || equalFold(v, "no"):
		return ReportNo, nil
	case equalFold(v, "yes"):
		return ReportYes, nil
	}
	return ReportNo, valueErr(HdrSuccessReport, v, `want "yes" or "no"`)
}

// ParseFailureReport parses a Failure-Report value; an absent header (nil)
// means "yes" (RFC 4975 §7.1.1).
func ParseFailureReport(v []byte) (ReportMode, error) {
	switch {
	case v == nil || equalFold(v, "yes"):
		return ReportYes, nil
	case equalFold(v, "no"):
		return ReportNo, nil
	case equalFold(v, "partial"):
		return ReportPartial, nil
	}
	return ReportYes, valueErr(HdrFailureReport, v, `want "yes", "no" or "partial"`)
}

// ParseExpires parses an Expires, Min-Expires or Max-Expires value
// (RFC 4976 §8: 1*DIGIT delta seconds). Values beyond 2^32-1 are refused.
func ParseExpires(v []byte) (uint32, error) {
	n, ok := parseDigits(v)
	if !ok || len(v) > 10 || n > 1<<32-1 {
		return 0, valueErr(HdrExpires, v, "want 1*DIGIT seconds")
	}
	return uint32(n), nil
}
