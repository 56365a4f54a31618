package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/datagrid-relay/relay/internal/bench"
)

// run is the whole command; it returns the exit code: 0 done, 1 the
// benchmark failed (or, with -short, found a problem), 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "serve-baseline":
			return serveBaseline(ctx, args[1:], stdout, stderr)
		case "serve-bare":
			if err := bench.ServeBare(ctx, stdout); err != nil {
				fmt.Fprintln(stderr, "relaybench serve-bare:", err)
				return 1
			}
			return 0
		}
	}
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the report into this markdown file, between the relaybench markers (default: print it)")
	short := fs.Bool("short", false, "smoke run for CI: one short round of the main scenario; fails on errors, lost or duplicated events, not on speed")
	rounds := fs.Int("rounds", 0, "rounds of every scenario (default: 5 for the main scenario, 3 for the others)")
	duration := fs.Duration("duration", 8*time.Second, "measured time of each run")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each run's measurement")
	maxReq := fs.Int("max-requests", 2_000_000, "most requests of one run, warm-up included")
	resend := fs.Int("resend-every", 20, "every n-th request of a worker re-sends a delivery already answered 2xx (0: never)")
	scenarios := fs.String("scenarios", "", "comma-separated scenario names to run (default: all: c64-1KiB,c1-1KiB,c64-64KiB,c512-1KiB)")
	targets := fs.String("targets", "relay,baseline,bare", "comma-separated targets, in the first round's order")
	relayBin := fs.String("relay-bin", "", "use this relay binary instead of building ./cmd/relay from the working tree")
	relayRev := fs.String("relay-rev", "", "with -relay-bin: what it was built from, for the report")
	perfDir := fs.String("perf", "", "record the relay's first run of each scenario with `perf record -g` into this directory")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: relaybench [flags]
       relaybench serve-baseline -nats URL [-stream S -prefix P]   (started by relaybench)
       relaybench serve-bare                                      (started by relaybench)

Builds cmd/relay and nats-server, starts one nats-server, and drives the relay,
a hand-written baseline relay and a bare net/http server with signed deliveries
over loopback, alternating over rounds. Run it from the relay's checkout.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relaybench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "relaybench:", err)
		return 1
	}
	o := bench.Options{
		Scenarios: bench.DefaultScenarios(), Targets: splitList(*targets),
		Warmup: *warmup, Duration: *duration, MaxRequests: *maxReq, ResendEvery: *resend,
		Self: self, Log: stderr, PerfDir: *perfDir, RelayBin: *relayBin, RelayRevision: *relayRev,
	}
	if *short {
		o.Scenarios = o.Scenarios[:1]
		o.Scenarios[0].Rounds = 1
		o.Warmup, o.Duration = 300*time.Millisecond, time.Second
	}
	if *scenarios != "" {
		var picked []bench.Scenario
		for _, name := range splitList(*scenarios) {
			found := false
			for _, sc := range bench.DefaultScenarios() {
				if sc.Name == name {
					picked, found = append(picked, sc), true
				}
			}
			if !found {
				fmt.Fprintf(stderr, "relaybench: unknown scenario %q\n", name)
				return 2
			}
		}
		o.Scenarios = picked
	}
	if *rounds > 0 {
		for i := range o.Scenarios {
			o.Scenarios[i].Rounds = *rounds
		}
	}
	for _, t := range o.Targets {
		if t != bench.TargetRelay && t != bench.TargetBaseline && t != bench.TargetBare {
			fmt.Fprintf(stderr, "relaybench: unknown target %q (relay, baseline, bare)\n", t)
			return 2
		}
	}

	rep, err := bench.Run(ctx, o)
	if err != nil && rep == nil {
		fmt.Fprintln(stderr, "relaybench:", err)
		return 1
	}
	rep.Command = "go run ./cmd/relaybench"
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		rep.Command += " " + a
	}
	if *out != "" {
		if werr := bench.UpdateFile(*out, rep); werr != nil {
			fmt.Fprintln(stderr, "relaybench: write report:", werr)
			return 1
		}
		fmt.Fprintln(stderr, "relaybench: report written to", *out)
	} else {
		rep.WriteMarkdown(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "relaybench:", err)
		return 1
	}
	if probs := rep.Problems(); len(probs) > 0 {
		fmt.Fprintln(stderr, "relaybench: problems:")
		for _, p := range probs {
			fmt.Fprintln(stderr, "  ", p)
		}
		if *short {
			return 1
		}
	}
	return 0
}

func serveBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relaybench serve-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", "NATS URL (required)")
	stream := fs.String("stream", bench.BaselineStream, "stream to create and publish to")
	prefix := fs.String("prefix", bench.BaselinePrefix, "subject prefix")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	secret := os.Getenv(bench.SecretEnv)
	if *natsURL == "" || secret == "" {
		fmt.Fprintf(stderr, "relaybench serve-baseline: -nats and %s are required\n", bench.SecretEnv)
		return 2
	}
	if err := bench.ServeBaseline(ctx, *natsURL, []byte(secret), *stream, *prefix, stdout); err != nil {
		fmt.Fprintln(stderr, "relaybench serve-baseline:", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
