package relay

import (
	"log/slog"
)

// Logs a peer can trigger (failed AUTHs, malformed frames, refusals,
// closes) go through r.plog (internal/ratelog): per kind of line, the
// first lines of each interval, then one line with suppressed=K. Limits
// hit are logged at WARN as "limit hit", each limit under its own key, so
// every limit hit shows at least once per interval however busy the others.
//
// Attribute names are the metrics' (internal/metrics): event= is the event
// of msrpscope_relay_events (auth_failed, refused, queue_full, ...),
// reason= the reason of msrpscope_connections_closed and the limit of
// msrpscope_limit_hits; limit= is the configuration key of the limit hit.

// The limits, by their configuration keys (docs/CONFIG.md, relay.limits).
const (
	limitMaxConnections      = "max_connections"
	limitMaxConnectionsPerIP = "max_connections_per_ip"
	limitMaxSessions         = "max_sessions"
	limitMaxSessionsPerUser  = "max_sessions_per_user"
	limitMaxAuthFailures     = "max_auth_failures"
	limitWriteQueue          = "write_queue"

	// refusedShutdown is admit's answer while shutting down: no limit.
	refusedShutdown = "shutdown"
)

// logLimit logs that c's peer hit limit (a configuration key), with attrs.
func (r *Relay) logLimit(c *conn, limit string, attrs ...slog.Attr) {
	all := make([]slog.Attr, 0, 3+len(attrs))
	all = append(all, slog.String("limit", limit), slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()))
	r.plog.Warn(limit, "limit hit", append(all, attrs...)...)
}

// logAuthFailed logs a failed AUTH on c.
func (c *conn) logAuthFailed(err error) {
	c.r.plog.Info("auth_failed", "AUTH failed", slog.Uint64("conn", c.info.ID), slog.String("remote", c.info.Remote.String()),
		slog.String("error", err.Error()), slog.String("event", "auth_failed"))
}
