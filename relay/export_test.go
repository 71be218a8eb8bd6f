package relay

import (
	"context"
	"net"
)

// ConnWriters reports how many forwards write, or wait to write, a frame
// into connection id (-1 when there is none), for tests that must know a
// frame is in flight.
func ConnWriters(r *Relay, id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.conns[id]; c != nil {
		return int(c.writers.Load())
	}
	return -1
}

// ShuttingDown reports whether r's graceful shutdown has begun.
func ShuttingDown(r *Relay) bool { return r.shuttingDown.Load() }

// RaceEnabled: the race detector is on (memory and allocation figures differ).
const RaceEnabled = raceEnabled

// SetDialHook makes r open outbound TCP connections with dial (before
// Serve), for tests of a connect that does not complete.
func SetDialHook(r *Relay, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	r.dialHook = dial
}
