// Command msrpctl operates a running msrpscope from a terminal through its
// admin API, and queries the traces it stored in ClickHouse.
//
//	msrpctl [flags] COMMAND [ARGS]    (msrpctl -h lists the commands)
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
