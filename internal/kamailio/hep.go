package kamailio

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// HEPTemplate is the config StartHEPCollector runs: Kamailio 5.6 sipcapture
// listening for HEPv3 on UDP and TCP, logging one "HEP rcv=... END" line per
// packet from event_route[sipcapture:request] (fields through $hep(...),
// string chunks as hex).
var HEPTemplate = template.Must(template.New("sipcapture.cfg").Parse(sipcaptureConfig))

//go:embed sipcapture.cfg.tmpl
var sipcaptureConfig string

// HEPProbePrefix starts the correlation id (chunk 0x011) of the probe packets
// StartHEPCollector sends to prove readiness. Packets and WaitFor leave them
// out; HEPPacket.IsProbe recognises them.
const HEPProbePrefix = "msrpscope-kamailio-hep-probe-"

// HEPUnreadable is what Kamailio 5.6's $hep() gives for chunks it cannot
// read (0x010, 0x012, 0x013) when they are present, and for $hep(version)
// when the packet does not start with "HEP3".
const HEPUnreadable = "4294967295"

// HEPPacket is one packet as Kamailio's sipcapture decoded it, parsed from
// the log line. Absent numeric chunks are logged empty and read as zero (see
// Fields for the raw text).
type HEPPacket struct {
	// Transport is how Kamailio received the packet: "udp" or "tcp".
	Transport string
	// Peer is the sender's socket address as Kamailio saw it ($si:$sp),
	// not the HEP source chunk.
	Peer netip.AddrPort

	// Version is $hep(version): 3, or 4294967295 when the packet does not
	// start with "HEP3" (Kamailio parses the chunks anyway).
	Version uint32
	// Family (0x001), IPProto (0x002), ProtoType (0x00b).
	Family, IPProto, ProtoType uint8
	// Src and Dst are chunk 0x003 or 0x005 and chunk 0x004 or 0x006;
	// invalid when absent.
	Src, Dst netip.Addr
	// SrcPort (0x007), DstPort (0x008), KeepAlive (0x00d).
	SrcPort, DstPort, KeepAlive uint16
	// TimeSec (0x009), TimeUsec (0x00a), CaptureID (0x00c).
	TimeSec, TimeUsec, CaptureID uint32
	// AuthKey (0x00e) and CorrelationID (0x011); nil when absent. (The raw
	// Fields["authkey"] and Fields["corrid"] are "30", hex of "0", for an
	// absent chunk: Kamailio's quirk.)
	AuthKey, CorrelationID []byte
	// CompressedPayload (0x010), VLAN (0x012) and NodeName (0x013) as
	// Kamailio 5.6 prints them: it cannot read these chunks, so the value is
	// "4294967295" when the chunk is present, whatever it holds, and ""
	// when absent.
	CompressedPayload, VLAN, NodeName string
	// Payload is chunk 0x00f, nil when absent. Kamailio's hex transformation
	// gives up above about 32 KB: Payload is then nil while PayloadLen holds
	// the size.
	Payload []byte
	// PayloadLen is the payload's length as Kamailio logged it ({s.len}).
	PayloadLen int

	// Fields holds every key=value of the log line, raw.
	Fields map[string]string
	// Err is set when a logged value did not parse; its typed field is
	// then zero.
	Err error
}

// Time returns TimeSec and TimeUsec as a time.
func (p HEPPacket) Time() time.Time {
	return time.Unix(int64(p.TimeSec), int64(p.TimeUsec)*1000)
}

// IsProbe reports whether p is one of StartHEPCollector's readiness probes.
func (p HEPPacket) IsProbe() bool {
	return bytes.HasPrefix(p.CorrelationID, []byte(HEPProbePrefix))
}

// HEPCollector is a running Kamailio sipcapture receiving HEPv3 over UDP and
// TCP on one loopback port. Its methods are safe for concurrent use, except
// that WaitFor and WaitMatch must be called from the test's goroutine.
type HEPCollector struct {
	k *Instance

	mu     sync.Mutex
	off    int64       // log bytes consumed (up to the last complete line)
	pkts   []HEPPacket // every packet so far, probes included
	probes int
}

// StartHEPCollector starts Kamailio sipcapture on a free 127.0.0.1 port (UDP
// and TCP) and returns once a probe packet sent over UDP and one sent over
// TCP have both been logged. Like Start, it skips tb without Kamailio (fails
// when CI is set) and stops Kamailio when the test ends.
func StartHEPCollector(tb testing.TB) *HEPCollector {
	tb.Helper()
	k := Start(tb, Config{
		Template: HEPTemplate,
		Children: 1, // one worker per transport: lines come out in arrival order
		Modules:  []string{"sipcapture.so", "db_text.so", "xlog.so", "pv.so"},
	})
	c := &HEPCollector{k: k}
	if err := c.probe("udp"); err != nil {
		tb.Fatalf("kamailio sipcapture: %v; log tail:\n%s", err, k.LogTail(40))
	}
	if err := c.probe("tcp"); err != nil {
		tb.Fatalf("kamailio sipcapture: %v; log tail:\n%s", err, k.LogTail(40))
	}
	return c
}

// probe sends probe packets over network until one is logged.
func (c *HEPCollector) probe(network string) error {
	conn, err := net.Dial(network, c.Addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		if i%20 == 0 { // resend every 200 ms: a UDP datagram may come too early
			c.mu.Lock()
			c.probes++
			id := fmt.Sprintf("%s%s-%d", HEPProbePrefix, network, c.probes)
			c.mu.Unlock()
			if _, err := conn.Write(probePacket(id)); err != nil {
				return fmt.Errorf("sending a probe over %s: %w", network, err)
			}
		}
		for _, p := range c.all() {
			if p.IsProbe() && p.Transport == network {
				return nil
			}
		}
		select {
		case <-c.k.Exited():
			return errors.New("kamailio exited")
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no probe sent over %s was logged within 20s", network)
		}
	}
}

// probePacket is a HEPv3 packet with the generic chunks, correlation id id
// and a short payload.
func probePacket(id string) []byte {
	b := []byte("HEP3\x00\x00")
	chunk := func(typ uint16, data []byte) {
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(6+len(data)))
		b = append(b, data...)
	}
	chunk(0x001, []byte{2})
	chunk(0x002, []byte{6})
	chunk(0x003, []byte{127, 0, 0, 1})
	chunk(0x004, []byte{127, 0, 0, 1})
	chunk(0x007, []byte{0, 1})
	chunk(0x008, []byte{0, 2})
	now := time.Now()
	chunk(0x009, binary.BigEndian.AppendUint32(nil, uint32(now.Unix())))
	chunk(0x00a, binary.BigEndian.AppendUint32(nil, uint32(now.Nanosecond()/1000)))
	chunk(0x00b, []byte{100})
	chunk(0x00c, []byte{0, 0, 0, 1})
	chunk(0x011, []byte(id))
	chunk(0x00f, []byte("readiness probe"))
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	return b
}

// Addr returns "127.0.0.1:PORT", the UDP and TCP address to send HEP to.
func (c *HEPCollector) Addr() string { return c.k.Addr() }

// Port returns the UDP and TCP port.
func (c *HEPCollector) Port() int { return c.k.Port() }

// Instance returns the Kamailio process (log, config path, exit).
func (c *HEPCollector) Instance() *Instance { return c.k }

// Packets returns every packet logged so far, in log order, without the
// readiness probes.
func (c *HEPCollector) Packets() []HEPPacket {
	var out []HEPPacket
	for _, p := range c.all() {
		if !p.IsProbe() {
			out = append(out, p)
		}
	}
	return out
}

// WaitFor waits until at least n packets (probes not counted) have been
// logged and returns them all. It fails tb when timeout passes or Kamailio
// exits first.
func (c *HEPCollector) WaitFor(tb testing.TB, n int, timeout time.Duration) []HEPPacket {
	tb.Helper()
	var got []HEPPacket
	c.wait(tb, timeout, fmt.Sprintf("%d HEP packets", n), func() bool {
		got = c.Packets()
		return len(got) >= n
	})
	return got
}

// WaitMatch waits until a logged packet (probes excluded) satisfies match
// and returns the first that does. It fails tb when timeout passes or
// Kamailio exits first.
func (c *HEPCollector) WaitMatch(tb testing.TB, match func(HEPPacket) bool, timeout time.Duration) HEPPacket {
	tb.Helper()
	var got HEPPacket
	c.wait(tb, timeout, "a matching HEP packet", func() bool {
		for _, p := range c.Packets() {
			if match(p) {
				got = p
				return true
			}
		}
		return false
	})
	return got
}

func (c *HEPCollector) wait(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		exited := false
		select {
		case <-c.k.Exited():
			exited = !cond() // the last lines may have been logged just before exiting
			if !exited {
				return
			}
		case <-tick.C:
		}
		if exited || time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range c.Packets() {
				fmt.Fprintf(&b, "\n  %s %s corrid=%q ptype=%d plen=%d", p.Transport, p.Peer, p.CorrelationID, p.ProtoType, p.PayloadLen)
			}
			reason := fmt.Sprintf("not within %v", timeout)
			if exited {
				reason = "kamailio exited"
			}
			tb.Fatalf("kamailio sipcapture: waiting for %s: %s; packets so far:%s\nlog tail:\n%s", what, reason, b.String(), c.k.LogTail(20))
		}
	}
}

// all reads the log's new complete lines and returns every packet so far.
func (c *HEPCollector) all() []HEPPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, err := os.Open(c.k.logPath); err == nil {
		if _, err := f.Seek(c.off, io.SeekStart); err == nil {
			if b, err := io.ReadAll(f); err == nil {
				if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
					c.off += int64(i + 1)
					for _, line := range strings.Split(string(b[:i]), "\n") {
						if p, ok := ParseHEPLine(line); ok {
							c.pkts = append(c.pkts, p)
						}
					}
				}
			}
		}
		f.Close()
	}
	return c.pkts[:len(c.pkts):len(c.pkts)]
}

// ParseHEPLine parses one "HEP rcv=... END" line of HEPTemplate's log; ok is
// false for any other line.
func ParseHEPLine(line string) (p HEPPacket, ok bool) {
	i := strings.Index(line, "HEP rcv=")
	if i < 0 || !strings.HasSuffix(line, " END") {
		return p, false
	}
	p.Fields = map[string]string{}
	for _, f := range strings.Fields(line[i+len("HEP ") : len(line)-len(" END")]) {
		if k, v, ok := strings.Cut(f, "="); ok {
			p.Fields[k] = v
		}
	}
	var errs []error
	num := func(key string, bits int) uint64 {
		v := p.Fields[key]
		if v == "" {
			return 0
		}
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
		}
		return n
	}
	addr := func(k4, k6 string) netip.Addr {
		for _, k := range []string{k4, k6} {
			if v := p.Fields[k]; v != "" {
				a, err := netip.ParseAddr(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s=%q: %w", k, v, err))
				}
				return a
			}
		}
		return netip.Addr{}
	}
	str := func(has, key string) []byte {
		if p.Fields[has] != "1" {
			return nil
		}
		b, err := hex.DecodeString(p.Fields[key])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return b
	}
	p.Transport = p.Fields["rcv"]
	if v := p.Fields["peer"]; v != "" {
		if j := strings.LastIndexByte(v, ':'); j > 0 {
			a, err1 := netip.ParseAddr(strings.Trim(v[:j], "[]"))
			port, err2 := strconv.ParseUint(v[j+1:], 10, 16)
			if err := errors.Join(err1, err2); err != nil {
				errs = append(errs, fmt.Errorf("peer=%q: %w", v, err))
			} else {
				p.Peer = netip.AddrPortFrom(a, uint16(port))
			}
		}
	}
	p.Version = uint32(num("version", 32))
	p.Family = uint8(num("family", 8))
	p.IPProto = uint8(num("ipproto", 8))
	p.Src = addr("src4", "src6")
	p.Dst = addr("dst4", "dst6")
	p.SrcPort = uint16(num("sport", 16))
	p.DstPort = uint16(num("dport", 16))
	p.TimeSec = uint32(num("tsec", 32))
	p.TimeUsec = uint32(num("tusec", 32))
	p.ProtoType = uint8(num("ptype", 8))
	p.CaptureID = uint32(num("capid", 32))
	p.KeepAlive = uint16(num("keepalive", 16))
	p.AuthKey = str("hasauthkey", "authkey")
	p.CorrelationID = str("hascorrid", "corrid")
	p.CompressedPayload = p.Fields["t16"]
	p.VLAN = p.Fields["vlan"]
	p.NodeName = p.Fields["node"]
	if p.Fields["haspayload"] == "1" {
		p.PayloadLen = int(num("plen", 31))
		if p.PayloadLen == 0 || p.Fields["payload"] != "" {
			p.Payload = str("haspayload", "payload")
		}
	}
	p.Err = errors.Join(errs...)
	return p, true
}
