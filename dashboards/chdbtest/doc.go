// Package chdbtest runs every ClickHouse panel query of the dashboards, expanded as Grafana does,
// on ClickHouse 26.7 (chDB) over a relay run's rows; its tests build only with the tag chdb.
package chdbtest
