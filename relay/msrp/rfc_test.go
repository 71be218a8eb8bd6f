package msrp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func rfcFrames(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "rfc", "*.msrp"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no RFC example frames in testdata/rfc: %v", err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// Every example frame of RFC 4975 and RFC 4976 reads as one frame, and its
// header values parse with the value types; the one printed without an
// end-line is reported as truncated.
func TestRFCExamples(t *testing.T) {
	for name, b := range rfcFrames(t) {
		t.Run(name, func(t *testing.T) {
			r := NewReader(bufio.NewReader(bytes.NewReader(b)), Limits{})
			f, err := r.ReadFrame()
			// Examples the RFC prints wrong (see testdata/rfc/README.md).
			wantErr := map[string]error{
				"rfc4976-s3-200ok-hop3.rfc-as-printed.msrp":  ErrTruncated,    // no end-line
				"rfc4976-s5.1-auth2.rfc-as-printed.msrp":     ErrHeaderSyntax, // continuation without "\"
				"rfc4976-s5.1-auth4.rfc-as-printed.msrp":     ErrHeaderSyntax,
				"rfc4976-s5.1-auth4-fwd.rfc-as-printed.msrp": ErrHeaderSyntax,
			}[name]
			if wantErr != nil {
				if !errors.Is(err, wantErr) {
					t.Fatalf("RFC example printed malformed: %v, want %v", err, wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, f.Body()); err != nil {
				t.Fatal(err)
			}
			if !ValidFlag(f.Flag()) {
				t.Fatalf("flag %q", f.Flag())
			}
			for _, h := range f.Headers {
				var err error
				switch {
				case equalFold(h.Name, HdrToPath), equalFold(h.Name, HdrFromPath), equalFold(h.Name, HdrUsePath):
					_, err = ParsePath(string(h.Value))
				case equalFold(h.Name, HdrByteRange):
					_, err = ParseByteRange(h.Value)
				case equalFold(h.Name, HdrStatus):
					_, err = ParseStatus(h.Value)
				case equalFold(h.Name, HdrSuccessReport):
					_, err = ParseSuccessReport(h.Value)
				case equalFold(h.Name, HdrFailureReport):
					_, err = ParseFailureReport(h.Value)
				case equalFold(h.Name, HdrExpires):
					_, err = ParseExpires(h.Value)
				case equalFold(h.Name, HdrWWWAuthenticate), equalFold(h.Name, HdrAuthorization):
					_, err = ParseDigest(h.Value)
				case equalFold(h.Name, HdrAuthenticationInf):
					_, err = ParseAuthenticationInfo(h.Value)
				case equalFold(h.Name, HdrMessageID):
					if !ValidIdent(h.Value) {
						err = errors.New("Message-ID is not an ident")
					}
				}
				if err != nil {
					t.Errorf("%s: %v", h.Name, err)
				}
			}
			if strings.Contains(name, "auth2.msrp") {
				d, _ := ParseDigest(f.Get(HdrAuthorization))
				if u, _ := d.Get("username"); u != "Alice" {
					t.Errorf("username %q", u)
				}
			}
			if _, err := r.ReadFrame(); err != io.EOF {
				t.Fatalf("after the frame: %v, want io.EOF", err)
			}
		})
	}
}
