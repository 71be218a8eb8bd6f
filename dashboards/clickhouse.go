package dashboards

// The ClickHouse dashboards read the modern schema (storage/, docs/STORAGE.md): DateTime64(6) ts,
// IPv6 addresses (IPv4 stored IPv4-mapped), the per-minute rollups. The database is the hidden
// constant variable "database" (msrpscope unless the storage sink's database differs).

// Filters of the Overview. node and port are multi-value query variables with "All": the plugin's
// $__conditionalAll(cond, $var) is 1=1 when All is selected, so All never lists values (and an
// empty list never breaks the SQL). cidr is a text box: empty or "all" means every address.
const (
	// addr is the remote address as text, IPv4 without its ::ffff: prefix (10.0.0.0/8 matches it).
	addr     = `replaceRegexpOne(IPv6NumToString(remote_ip), '^::ffff:', '')`
	nodeCond = `$__conditionalAll(node IN (${node:singlequote}), $node)`
	portCond = `$__conditionalAll(local_port IN (${port:singlequote}), $port)`
	cidrAll  = `${cidr:singlequote} IN ('', 'all')`
	// An IPv6 CIDR (::ffff:10.0.0.0/104 too) is matched against the stored IPv6 form.
	cidrCond = `(` + cidrAll + ` OR isIPAddressInRange(if(position(${cidr:singlequote}, ':') > 0, IPv6NumToString(remote_ip), ` +
		addr + `), ${cidr:singlequote}))`
	// unfiltered holds when neither a port nor a CIDR is chosen: the rollups (which have no
	// sockets) answer then; otherwise the base tables do, filtered.
	unfiltered = `($__conditionalAll(1 = 0, $port) AND ` + cidrAll + `)`
	// Per-minute panels: a bucket is at least a minute (the rollups' grain) or Grafana's interval.
	bucketSecs = `greatest($__interval_s, 60)`
	rollupTime = `minute >= toStartOfMinute($__fromTime) AND minute <= $__toTime`
)

// bucket is the start of the panel's bucket for a DateTime expression.
func bucket(t string) string {
	return `toStartOfInterval(` + t + `, toIntervalSecond(` + bucketSecs + `))`
}

// perMinute is a time series read from a rollup when no socket filter is set and from the base
// table otherwise: cols are the columns both branches select (after the bucket "t"); outer is
// the SELECT list over them (time first).
func perMinute(outer, groupBy string, rollup, rollupWhere, base, baseCols, baseWhere, cols string) string {
	return `SELECT ` + outer + `
FROM (
  SELECT ` + bucket("minute") + ` AS t, ` + cols + `
  FROM ${database}.` + rollup + `
  WHERE ` + rollupTime + ` AND ` + nodeCond + rollupWhere + ` AND ` + unfiltered + `
  UNION ALL
  SELECT ` + bucket("toDateTime(ts)") + ` AS t, ` + baseCols + `
  FROM ${database}.` + base + `
  WHERE $__timeFilter(ts) AND ` + nodeCond + ` AND ` + portCond + ` AND ` + cidrCond + baseWhere + ` AND NOT ` + unfiltered + `
)
GROUP BY ` + groupBy + `
ORDER BY time`
}

const methodLabel = `if(method = '', 'response', method)`

// Overview is traffic, failures, AUTH and connections over time, and the top talkers.
func Overview() Dashboard {
	vars := []Variable{
		database(),
		{Type: "query", Name: "node", Label: "Node", Datasource: &clickHouse,
			Query:      `SELECT DISTINCT node FROM ${database}.frames_per_minute WHERE minute >= now() - INTERVAL 7 DAY ORDER BY node`,
			Refresh:    1,
			Multi:      true,
			IncludeAll: true, Current: &Current{Text: []string{"All"}, Value: []string{"$__all"}}, Options: []any{}},
		{Type: "textbox", Name: "cidr", Label: "Remote CIDR",
			Description: "10.0.0.0/8, 2001:db8::/32, or all",
			Query:       "all", Current: &Current{Text: "all", Value: "all"}, Options: []any{}},
		{Type: "query", Name: "port", Label: "Local port", Datasource: &clickHouse,
			Description: "the relay's listening port of inbound connections (outbound connections have other local ports)",
			Query:       `SELECT DISTINCT local_port FROM ${database}.events WHERE event = 'accepted' AND ts >= now() - INTERVAL 7 DAY ORDER BY local_port`,
			Refresh:     1,
			Multi:       true,
			IncludeAll:  true, Current: &Current{Text: []string{"All"}, Value: []string{"$__all"}}, Options: []any{}},
	}
	for i := range vars {
		if vars[i].Type == "query" {
			vars[i].Definition = vars[i].Query
		}
	}
	series := `concat(` + methodLabel + `, ' ', direction)`
	frames := perMinute(`t AS time, `+series+` AS series, sum(frames) / `+bucketSecs+` AS frames_per_s`, `time, series`,
		"frames_per_minute", "", "frames", "method, direction, 1 AS frames, size AS bytes", "",
		"method, direction, frames, bytes")
	bytes := perMinute(`t AS time, `+series+` AS series, sum(bytes) / `+bucketSecs+` AS bytes_per_s`, `time, series`,
		"frames_per_minute", "", "frames", "method, direction, 1 AS frames, size AS bytes", "",
		"method, direction, frames, bytes")
	failures := perMinute(`t AS time, concat(toString(status), ' ', direction) AS series, sum(responses) * 60 / `+bucketSecs+` AS failures_per_min`,
		`time, series`, "failures_per_minute", "", "frames", "direction, status, 1 AS responses", " AND status >= 300",
		"direction, status, responses")
	authLabel := `multiIf(status = 200, 'success (200)', status = 401, 'challenge or bad credentials (401)', concat('failure (', toString(status), ')'))`
	authRes := perMinute(`t AS time, `+authLabel+` AS series, sum(responses) * 60 / `+bucketSecs+` AS responses_per_min`,
		`time, series`, "auth_per_minute", "", "frames", "status, 1 AS responses", " AND auth_response = 1 AND direction = 'out'",
		"status, responses")
	connLabel := `if(event = 'closed', concat('closed: ', if(reason = '', 'unknown', reason)), event)`
	conns := perMinute(`t AS time, `+connLabel+` AS series, sum(connections) * 60 / `+bucketSecs+` AS connections_per_min`,
		`time, series`, "connections_per_minute", "", "events", "event, reason, 1 AS connections",
		" AND event IN ('accepted', 'connected', 'closed')", "event, reason, connections")
	perNode := perMinute(`t AS time, node AS series, sum(bytes) / `+bucketSecs+` AS bytes_per_s`, `time, series`,
		"frames_per_minute", "", "frames", "node, 1 AS frames, size AS bytes", "", "node, frames, bytes")
	talkers := `SELECT ` + addr + ` AS remote_addr, count() AS frames, sum(size) AS bytes,
  sum(size) / greatest(dateDiff('second', $__fromTime, $__toTime), 1) AS bytes_per_s,
  uniqExact(conn_id) AS connections, countIf(status >= 300) AS failures
FROM ${database}.frames
WHERE $__timeFilter(ts) AND ` + nodeCond + ` AND ` + portCond + ` AND ` + cidrCond + `
GROUP BY remote_addr
ORDER BY bytes DESC
LIMIT 20`
	note := " Per-minute rollups when no port or CIDR is chosen, the frames/events tables otherwise."
	panels := layout([]Panel{
		sqlPanel("timeseries", "Frames/s by method and direction", "MSRP frames per second; responses as 'response'."+note, "ops", 12, 8, FormatTimeSeries, frames),
		sqlPanel("timeseries", "Bytes/s by method and direction", "Bytes on the wire per second."+note, "Bps", 12, 8, FormatTimeSeries, bytes),
		sqlPanel("timeseries", "Failures by status", "Responses with status >= 300 per minute, by status and direction."+note, "short", 12, 8, FormatTimeSeries, failures),
		sqlPanel("timeseries", "AUTH results", "Responses this relay sent to AUTH requests per minute (RFC 4976 §5): 200 success, 401 challenge or bad credentials, 420/423 expiry out of bounds."+note, "short", 12, 8, FormatTimeSeries, authRes),
		sqlPanel("timeseries", "Connections by close reason", "Connections accepted, connected (outbound) and closed (by reason) per minute."+note, "short", 12, 8, FormatTimeSeries, conns),
		sqlPanel("timeseries", "Traffic per node", "Bytes per second by relay node."+note, "Bps", 12, 8, FormatTimeSeries, perNode),
		sqlPanel("table", "Top talkers", "Remote addresses by bytes in the time range (frames table).", "", 24, 10, FormatTable, talkers),
	})
	return newDashboard("msrpscope-overview", "msrpscope: overview",
		"MSRP traffic stored by msrpscope in ClickHouse (storage sink).", vars, panels)
}

func database() Variable {
	return Variable{Type: "constant", Name: "database", Query: "msrpscope", Hide: 2,
		Current: &Current{Text: "msrpscope", Value: "msrpscope"}, Options: []any{}}
}

// Session drill-down: its selection is a session id (either side, or the correlation id) or a
// Message-ID (its chunks and, by transaction, their responses). Empty boxes select nothing.
const sessionSel = `((${session:singlequote} != '' AND (session_id = ${session:singlequote} OR peer_session_id = ${session:singlequote} OR correlation_id = ${session:singlequote}))
  OR (${message_id:singlequote} != '' AND (message_id = ${message_id:singlequote}
    OR (conn_id, transact_id) IN (SELECT conn_id, transact_id FROM ${database}.frames WHERE $__timeFilter(ts) AND message_id = ${message_id:singlequote}))))`

// Session shows one session's or message's frames in order and its timing.
func Session() Dashboard {
	vars := []Variable{
		database(),
		{Type: "textbox", Name: "session", Label: "Session or correlation id",
			Description: "a relay session id (from Use-Path) or a correlation id (id~id)",
			Query:       "", Current: &Current{Text: "", Value: ""}, Options: []any{}},
		{Type: "textbox", Name: "message_id", Label: "Message-ID",
			Query: "", Current: &Current{Text: "", Value: ""}, Options: []any{}},
	}
	where := `WHERE $__timeFilter(ts) AND ` + sessionSel
	frames := `SELECT ts, node, direction, if(method != '', method, toString(status)) AS frame, transact_id, message_id,
  byte_range, size, content_type, flag, conn_id,
  concat(` + addr + `, ':', toString(remote_port)) AS remote, session_id, peer_session_id,
  round(dateDiff('microsecond', min(ts) OVER (), ts) / 1000, 3) AS since_first_ms
FROM ${database}.frames
` + where + `
ORDER BY ts
LIMIT 10000`
	summary := `SELECT min(ts) AS first, max(ts) AS last, round(dateDiff('microsecond', min(ts), max(ts)) / 1000, 3) AS duration_ms,
  count() AS frames, sum(size) AS bytes, countIf(method = 'SEND' AND direction = 'in') AS sends_in,
  countIf(status >= 300) AS failures, uniqExact(conn_id) AS connections
FROM ${database}.frames
` + where
	txns := `SELECT conn_id, transact_id, anyIf(method, method != '') AS request, maxIf(status, status != 0) AS response_status,
  minIf(ts, method != '') AS request_at,
  if(countIf(method != '') = 0 OR countIf(status != 0) = 0, NULL,
     round(dateDiff('microsecond', minIf(ts, method != ''), minIf(ts, status != 0)) / 1000, 3)) AS response_ms
FROM ${database}.frames
` + where + `
GROUP BY conn_id, transact_id
ORDER BY request_at
LIMIT 10000`
	chunks := `SELECT message_id, byte_range, minIf(ts, direction = 'in') AS received,
  if(countIf(direction = 'out') = 0, NULL,
     round(dateDiff('microsecond', minIf(ts, direction = 'in'), minIf(ts, direction = 'out')) / 1000, 3)) AS relay_ms,
  maxIf(size, direction = 'in') AS chunk_bytes
FROM ${database}.frames
` + where + ` AND method = 'SEND' AND message_id != ''
GROUP BY message_id, byte_range
ORDER BY received
LIMIT 10000`
	overTime := `SELECT $__timeInterval(ts) AS time, direction, count() AS frames
FROM ${database}.frames
` + where + `
GROUP BY time, direction
ORDER BY time`
	panels := layout([]Panel{
		sqlPanel("table", "Timing", "First and last frame, duration, counts.", "", 24, 4, FormatTable, summary),
		sqlPanel("table", "Frames in order", "Every frame of the session or message, in wire order; since_first_ms from the first.", "", 24, 12, FormatTable, frames),
		sqlPanel("table", "Transactions", "Per connection and transaction: request time and the time to its response.", "", 12, 10, FormatTable, txns),
		sqlPanel("table", "Relay delay per chunk", "A SEND chunk's first byte in to its forwarded copy's first byte out.", "", 12, 10, FormatTable, chunks),
		sqlPanel("timeseries", "Frames over time", "Frames per interval by direction.", "short", 24, 7, FormatTimeSeries, overTime),
	})
	return newDashboard("msrpscope-session", "msrpscope: session drill-down",
		"One session's or message's frames and timing, from the frames table.", vars, panels)
}

// sqlTargets is every ClickHouse SQL target of d, with its panel.
func sqlTargets(d Dashboard) []PanelQuery {
	var out []PanelQuery
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			if t.EditorType == "sql" {
				out = append(out, PanelQuery{Panel: p.Title, Type: p.Type, Format: *t.Format, Query: t.RawSQL})
			}
		}
	}
	return out
}

// PanelQuery is one panel's query: SQL for ClickHouse, PromQL for Prometheus.
type PanelQuery struct {
	Panel, Type string
	Format      int
	Query       string
}

// Queries is every query of d (SQL and PromQL), in panel order.
func Queries(d Dashboard) []PanelQuery {
	out := sqlTargets(d)
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			if t.Expr != "" {
				out = append(out, PanelQuery{Panel: p.Title + " " + t.RefID, Type: p.Type, Query: t.Expr})
			}
		}
	}
	return out
}
