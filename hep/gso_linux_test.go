package hep

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setLoopback brings lo up with the given MTU (inside a network namespace
// of the test's own).
func setLoopback(t *testing.T, mtu int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr, _ = unix.NewIfreq("lo")
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
		t.Fatalf("lo mtu %d: %v", mtu, err)
	}
}

// The route's MTU shrinks under the connected socket while GSO runs are in
// use: the kernel refuses a run (EMSGSIZE), the writer reads the MTU again
// and plans smaller runs, and every packet still arrives exactly once. The
// test runs itself again in a network namespace of its own (unshare -rn),
// where it may change the loopback MTU; it skips where that is not allowed.
func TestGSORouteMTUShrinks(t *testing.T) {
	if os.Getenv("HEP_TEST_IN_NETNS") == "" {
		cmd := exec.Command("unshare", "-rn", os.Args[0], "-test.run=^TestGSORouteMTUShrinks$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "HEP_TEST_IN_NETNS=1")
		out, err := cmd.CombinedOutput()
		switch {
		case bytes.Contains(out, []byte("--- FAIL")):
			t.Fatalf("in a network namespace:\n%s", out)
		case err != nil || !bytes.Contains(out, []byte("--- PASS")):
			t.Skipf("no network namespace of our own (unshare -rn): %v\n%s", err, out)
		}
		t.Logf("in a network namespace:\n%s", out)
		return
	}
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			setLoopback(t, 1500)
			host := "127.0.0.1"
			if network == "udp6" {
				host = "::1"
			}
			pc, err := net.ListenPacket(network, net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			conn, err := net.Dial(network, pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got := map[string]int{}
			readN := func(n int) {
				buf := make([]byte, 70000)
				for range n {
					if err := pc.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
						t.Fatal(err)
					}
					m, _, err := pc.ReadFrom(buf)
					if err != nil {
						t.Fatalf("read: %v (got %v)", err, got)
					}
					p, err := Decode(buf[:m])
					if err != nil {
						t.Fatal(err)
					}
					got[string(p.CorrelationID)]++
				}
			}
			c := &Client{cfg: ClientConfig{WriteTimeout: time.Second}, log: testLogger()}
			var ub udpBatcher
			batch := func(name string, sizes ...int) []*[]byte {
				var bufs []*[]byte
				for i, size := range sizes {
					b := testPacket(t, fmt.Sprintf("%s-%d", name, i), size)
					bufs = append(bufs, &b)
				}
				return bufs
			}
			send := func(bufs []*[]byte) {
				t.Helper()
				if sent, err := c.writeUDP(conn, &ub, bufs); err != nil || sent != len(bufs) {
					t.Fatalf("sent %d of %d: %v (gso %v, max segment %d)", sent, len(bufs), err, ub.gso, ub.maxSeg)
				}
				readN(len(bufs))
			}
			// 1300-byte packets fit a 1500-byte MTU: one run.
			big := []int{1300, 1300, 1300, 1300, 1290, 1280}
			send(batch("a", big...))
			seg := c.segmented.Load()
			if !ub.gso || seg != uint64(len(big)) {
				t.Fatalf("before: gso %v, %d segmented", ub.gso, seg)
			}
			setLoopback(t, 1280)
			// Now they do not: the run is refused, the MTU read again, the packets go alone
			// (IP-fragmented), and small ones still go in runs.
			send(batch("b", append(big, 300, 300, 290)...))
			if !ub.gso || ub.maxSeg >= 1300 {
				t.Fatalf("after: gso %v, max segment %d", ub.gso, ub.maxSeg)
			}
			if c.segmented.Load() == seg {
				t.Fatal("no run after the MTU shrank")
			}
			send(batch("c", append(big, 200, 200)...))
			for id, n := range got {
				if n != 1 {
					t.Fatalf("%s arrived %d times", id, n)
				}
			}
			if len(got) != 3*len(big)+5 {
				t.Fatalf("%d packets arrived", len(got))
			}
		})
	}
}
