package hep

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics on any input and that a decoded packet, encoded again
// and decoded again, is the same packet (and encodes to the same bytes). Seeds: the golden CONNECTED
// packet, the golden IPv6 frame, the 209-byte packet Kamailio's sipcapture accepted and the 373-byte
// packet its siptrace emitted (f.Add below), plus testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(mustHex(f, goldenConnected))
	f.Add(goldenIPv6Bytes(f))
	f.Add(mustHex(f, kamailio209))
	f.Add(mustHex(f, kamailioSiptrace373))
	f.Add([]byte("HEP3\x00\x06"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if p.Payload != nil || p.Extra != nil || p.Family != 0 {
				t.Fatalf("error %v but packet not zero: %+v", err, p)
			}
			return
		}
		enc, err := p.AppendEncode(nil)
		if err != nil {
			// The encoder always writes the fixed chunks (family ... capture id); a maximal input
			// lacking them may not fit 65535 bytes any more.
			if errors.Is(err, ErrTooLarge) && p.EncodedLen() > maxTotalLen {
				return
			}
			t.Fatalf("re-encode: %v", err)
		}
		if len(enc) != p.EncodedLen() {
			t.Fatalf("encoded %d bytes, EncodedLen %d", len(enc), p.EncodedLen())
		}
		q, err := Decode(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded packet: %v\n%x", err, enc)
		}
		if diff := packetDiff(p, q); diff != "" {
			t.Fatalf("round trip changed the packet:\n%s", diff)
		}
		enc2, err := q.AppendEncode(nil)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("second encode differs (err %v)", err)
		}
	})
}
