package hep

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/internal/ratelog"
)

// lockedBuffer is a bytes.Buffer a logger and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// A collector that accepts and closes every connection makes the client
// reconnect for every packet; its log stays bounded per kind of line
// (issue 14, defect 8), and the counts it writes at Close add up.
func TestClientLogsRateLimited(t *testing.T) {
	col := newCollector(t, "tcp", "refuse", nil)
	var buf lockedBuffer
	c, err := NewClient(context.Background(), ClientConfig{Transport: TCP, Addr: col.addr, QueueSize: 16,
		BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	noBlock(t, func() {
		waitFor(t, "reconnects", func() bool {
			i++
			c.Send(testPacket(t, fmt.Sprint("r", i), 100))
			return c.Stats().Reconnects >= 3*ratelog.DefaultBurst
		})
	})
	c.Close()
	reconnects := c.Stats().Reconnects
	lines := map[string]int{}
	connected := 0 // written or counted
	for _, line := range bytes.Split(bytes.TrimSpace(buf.b.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := m["msg"].(string)
		lines[msg]++
		if msg == "hep: collector connected" {
			if k, ok := m["suppressed"].(float64); ok {
				connected += int(k)
			} else {
				connected++
			}
		}
	}
	for msg, n := range lines {
		if n > ratelog.DefaultBurst+1 {
			t.Errorf("%d lines %q, want at most %d", n, msg, ratelog.DefaultBurst+1)
		}
	}
	if uint64(connected) != reconnects+1 {
		t.Errorf("connections logged or counted: %d, want %d (the first and %d reconnects)", connected, reconnects+1, reconnects)
	}
}
