//go:build chdb

package chdbtest

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msrpscope/msrpscope/storage"
	"github.com/msrpscope/msrpscope/storage/storagetest"
)

// Every query the API builds for modern servers, its SQL text and its parameters as they are,
// on ClickHouse 26.7 over the fixture inserted with the writer's column list and values.
func TestQueriesOn267(t *testing.T) {
	s := modern("msrpscope_queries")
	migrate(t, s)
	frames := storagetest.Frames()
	exec(t, storagetest.InsertSQL(s, frames))
	q := storage.Queries{Schema: s}
	for _, c := range storagetest.Cases(q, frames) {
		t.Run(c.Name, func(t *testing.T) {
			// clickhouse-go escapes string parameters (\ \t \n) before sending them; the same here.
			params := map[string]string{}
			for k, v := range c.Query.Params {
				params[k] = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`).Replace(v)
			}
			rs, err := engine.Rows(c.Query.SQL, params)
			if err != nil {
				t.Fatalf("%v\n%s", err, c.Query.SQL)
			}
			var got []string
			for _, r := range rs {
				got = append(got, printRow(t, c.Kind, r))
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", c.Want) {
				t.Fatalf("rows:\n got %s\nwant %s\nSQL:\n%s", strings.Join(got, "\n     "), strings.Join(c.Want, "\n     "), c.Query.SQL)
			}
		})
	}
}

// printRow prints a JSONEachRow row as storagetest.Case prints the Reader's results.
func printRow(t *testing.T, kind string, r map[string]any) string {
	t.Helper()
	str := func(k string) string {
		v, ok := r[k]
		if !ok {
			t.Fatalf("no column %s in %v", k, r)
		}
		return fmt.Sprint(v)
	}
	num := func(k string) uint64 {
		n, err := strconv.ParseUint(str(k), 10, 64)
		if err != nil {
			t.Fatalf("column %s: %v", k, err)
		}
		return n
	}
	addr := func(k string) netip.Addr {
		a, err := netip.ParseAddr(str(k))
		if err != nil {
			t.Fatalf("column %s: %v", k, err)
		}
		return a.Unmap()
	}
	switch kind {
	case "talkers":
		return fmt.Sprintf("%s %d %d", addr("remote_addr"), num("frames"), num("bytes"))
	case "failures":
		return fmt.Sprintf("%d %s %d", num("status"), str("direction"), num("responses"))
	case "auth":
		return fmt.Sprintf("%s %s %d", str("user"), addr("remote_addr"), num("failures"))
	}
	if got := strings.Join(sortedKeys(r), ","); got != strings.Join(sortedCopy(storage.FrameColumnsOut), ",") {
		t.Fatalf("frame columns %s, want %v", got, storage.FrameColumnsOut)
	}
	micros, err := strconv.ParseInt(str("ts_micros"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f := storage.Frame{
		TS: time.UnixMicro(micros).UTC(), Direction: str("direction"), Transport: str("transport"),
		LocalIP: addr("local_addr"), LocalPort: uint16(num("local_port")), RemoteIP: addr("remote_addr"),
		RemotePort: uint16(num("remote_port")), ConnID: num("conn_id"), SessionID: str("session_id"),
		PeerSessionID: str("peer_session_id"), CorrelationID: str("correlation_id"), TransactID: str("transact_id"),
		Method: str("method"), Status: uint16(num("status")), MessageID: str("message_id"), ByteRange: str("byte_range"),
		ContentType: str("content_type"), AuthUser: str("auth_user"), AuthResponse: num("auth_response") == 1,
		Flag: str("flag"), Size: num("size"), Body: str("body"), Node: str("node"),
	}
	return storagetest.Key(f)
}

func sortedKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return sortedCopy(out)
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
