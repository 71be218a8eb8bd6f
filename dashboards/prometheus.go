package dashboards

// RelayHealth is the relay's own metrics (docs/ADMIN.md, internal/metrics) from Prometheus
// scraping the admin listener's /metrics. $instance selects relays (a regex; All is .*).
func RelayHealth() Dashboard {
	vars := []Variable{{
		Type: "query", Name: "instance", Label: "Instance", Datasource: &prometheus,
		Query: "label_values(msrpscope_sessions, instance)", Definition: "label_values(msrpscope_sessions, instance)",
		Refresh: 1, Multi: true, IncludeAll: true, AllValue: ".*",
		Current: &Current{Text: []string{"All"}, Value: []string{"$__all"}}, Options: []any{},
	}}
	const sel = `instance=~"$instance"`
	const ri = `[$__rate_interval]`
	rate := func(metric, by, extra string) string {
		m := `{` + sel + extra + `}`
		return `sum by (` + by + `) (rate(` + metric + m + ri + `))`
	}
	quantile := func(q, metric, by string) string {
		return `histogram_quantile(` + q + `, sum by (` + by + `) (rate(` + metric + `_bucket{` + sel + `}` + ri + `)))`
	}
	panels := layout([]Panel{
		promPanel("Open connections", "Connections open now, by direction and transport.", "short", 8, 8,
			`sum by (direction, transport) (msrpscope_connections_open{`+sel+`})`, "{{direction}} {{transport}}"),
		promPanel("Connections opened/s", "Accepted (in) and established (out) per second.", "ops", 8, 8,
			rate("msrpscope_connections_opened_total", "direction, transport", ""), "{{direction}} {{transport}}"),
		promPanel("Connections closed/s by reason", "Closes per second by direction and the reason the logs name.", "ops", 8, 8,
			rate("msrpscope_connections_closed_total", "direction, reason", ""), "{{direction}} {{reason}}"),
		promPanel("Relay latency", "A request's first byte in to its forwarded copy's first byte out (histogram quantiles).", "s", 12, 8,
			quantile("0.5", "msrpscope_relay_latency_seconds", "le, method"), "p50 {{method}}",
			quantile("0.9", "msrpscope_relay_latency_seconds", "le, method"), "p90 {{method}}",
			quantile("0.99", "msrpscope_relay_latency_seconds", "le, method"), "p99 {{method}}"),
		promPanel("SEND response time", "A SEND written to the next hop until its 200 is read (histogram quantiles).", "s", 12, 8,
			quantile("0.5", "msrpscope_send_response_time_seconds", "le"), "p50",
			quantile("0.9", "msrpscope_send_response_time_seconds", "le"), "p90",
			quantile("0.99", "msrpscope_send_response_time_seconds", "le"), "p99"),
		promPanel("Frames/s", "Frames per second by method and direction.", "ops", 12, 8,
			rate("msrpscope_frames_total", "method, direction", ""), "{{method}} {{direction}}"),
		promPanel("Bytes/s", "Bytes on the wire per second by method and direction.", "Bps", 12, 8,
			rate("msrpscope_frame_bytes_total", "method, direction", ""), "{{method}} {{direction}}"),
		promPanel("Responses/s by class", "Responses per second by status class and direction.", "ops", 8, 8,
			rate("msrpscope_responses_total", "class, direction", ""), "{{class}} {{direction}}"),
		promPanel("AUTH decisions/s", "This relay's answers to AUTH (direction out): ok, challenge, forbidden, ...", "ops", 8, 8,
			rate("msrpscope_auth_results_total", "result", `, direction="out"`), "{{result}}"),
		promPanel("Limit hits/s", "Connections closed by a limit or timeout, by limit.", "ops", 8, 8,
			rate("msrpscope_limit_hits_total", "limit", ""), "{{limit}}"),
		promPanel("Sessions", "Relay sessions (AUTHed Use-Paths) held now.", "short", 8, 8,
			`sum(msrpscope_sessions{`+sel+`})`, "sessions"),
		promPanel("Relay events/s", "The relay's own counters: forwarded, refused, queue_full, txn_timeout, ...", "ops", 16, 8,
			rate("msrpscope_relay_events_total", "event", ""), "{{event}}"),
		promPanel("Trace records/s per sink", "Records each sink delivered, spooled and dropped per second, and its errors.", "ops", 12, 8,
			rate("msrpscope_trace_records_sent_total", "sink, type", ""), "sent {{sink}} ({{type}})",
			rate("msrpscope_trace_records_spooled_total", "sink, type", ""), "spooled {{sink}} ({{type}})",
			rate("msrpscope_trace_records_dropped_total", "sink, type", ""), "dropped {{sink}} ({{type}})",
			rate("msrpscope_trace_sink_errors_total", "sink, type", ""), "errors {{sink}} ({{type}})"),
		promPanel("Trace drops per sink", "Records dropped in the time range (queue or spool full).", "short", 12, 8,
			`sum by (sink, type) (increase(msrpscope_trace_records_dropped_total{`+sel+`}[$__range]))`, "{{sink}} ({{type}})"),
		promPanel("Trace spool per sink", "Bytes in each sink's on-disk spool now.", "bytes", 12, 8,
			`sum by (sink, type) (msrpscope_trace_spool_bytes{`+sel+`})`, "{{sink}} ({{type}})"),
		promPanel("Trace queue per sink", "Records waiting in each sink's queue now.", "short", 12, 8,
			`sum by (sink, type) (msrpscope_trace_records_queued{`+sel+`})`, "{{sink}} ({{type}})"),
	})
	return newDashboard("msrpscope-relay-health", "msrpscope: relay health",
		"The relay's /metrics (admin listener) through Prometheus.", vars, panels)
}
