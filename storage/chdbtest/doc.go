// Package chdbtest runs ClickHouse 26.7 embedded (chDB) in tests: the modern schema, migrations,
// rollups and every query on a current engine. Its files build only with the tag chdb (see engine.go).
package chdbtest
