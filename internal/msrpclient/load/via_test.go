package load

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// A forwarder that refuses the first line (closes A) must fail the pair
// at once, not after SetupTimeout waiting for a B connection that can
// never come.
func TestViaRefusedFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // refused, as msrpload forward does with a bad line
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, Options{Direct: true, Via: ln.Addr().String(), Pairs: 1, Count: 1})
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a refused -via took %v to fail (err %v, errors %v)", took.Round(time.Second), err, rep.Errors)
	}
	if err == nil || !strings.Contains(err.Error(), "did not connect to B") {
		t.Fatalf("err %v, want the forwarder named as not connecting", err)
	}
}
