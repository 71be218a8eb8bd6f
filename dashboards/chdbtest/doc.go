// Package chdbtest runs every ClickHouse panel query of msrpscope's dashboards, expanded as the
// Grafana ClickHouse plugin expands it, on ClickHouse 26.7 (chDB) over rows from a real relay run.
// Its tests build only with the tag chdb (see storage/chdbtest).
package chdbtest
