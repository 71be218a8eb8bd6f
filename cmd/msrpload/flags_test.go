package main

import (
	"slices"
	"testing"

	"github.com/msrpscope/msrpscope/internal/msrpclient/load"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"100", 100, false},
		{"0", 0, false},
		{"64KiB", 65536, false},
		{"64kib", 65536, false},
		{"16KB", 16000, false},
		{"16k", 16000, false},
		{"10MB", 10_000_000, false},
		{"10MiB", 10 << 20, false},
		{"1.5MiB", 3 << 19, false},
		{"1GiB", 1 << 30, false},
		{"512B", 512, false},
		{" 2 MB ", 2_000_000, false},
		{"", 0, true},
		{"KiB", 0, true},
		{"-1", 0, true},
		{"10XB", 0, true},
		{"3GiB", 0, true}, // beyond an int32 body
		{"NaN", 0, true},
	}
	for _, tc := range tests {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseUsers(t *testing.T) {
	tests := []struct {
		in      string
		want    []load.User
		wantErr bool
	}{
		{"demo", []load.User{{Name: "demo", Password: "def"}}, false},
		{"alice:a,bob", []load.User{{Name: "alice", Password: "a"}, {Name: "bob", Password: "def"}}, false},
		{"alice:,bob:b:c", []load.User{{Name: "alice", Password: ""}, {Name: "bob", Password: "b:c"}}, false},
		{" alice , bob:x ", []load.User{{Name: "alice", Password: "def"}, {Name: "bob", Password: "x"}}, false},
		{"", nil, true},
		{"alice,,bob", nil, true},
		{":pw", nil, true},
	}
	for _, tc := range tests {
		got, err := parseUsers(tc.in, "def")
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseUsers(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"0", 0, false}, {"5000", 5000, false}, {"5000/s", 5000, false}, {"2.5", 2.5, false},
		{"-1", 0, true}, {"fast", 0, true}, {"Inf", 0, true}, {"", 0, true},
	}
	for _, tc := range tests {
		got, err := parseRate(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseRate(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
