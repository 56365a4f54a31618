// Command relaybench measures the relay end to end against a hand-written
// baseline relay and a bare net/http server, all on one nats-server, and
// writes the results as markdown. See docs/benchmarks.md.
//
//	go run ./cmd/relaybench -out docs/benchmarks.md   # the full benchmark
//	go run ./cmd/relaybench -short                    # a few seconds, for CI
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
