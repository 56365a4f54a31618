package main

import (
	"context"

	"github.com/datagrid-relay/relay/internal/demo"
)

func runDemo(ctx context.Context, e env, args []string) error {
	fs := newFlags("demo", "The whole pipeline on this machine, no account and nothing to install: an embedded\n"+
		"NATS server with JetStream, a Datagrid simulator that registers webhooks like the\n"+
		"real API and sends signed sample deliveries, the relay itself, and a live printout\n"+
		"of every event as it lands on NATS. Ctrl-C stops it. Everything listens on\n"+
		"127.0.0.1, on free ports unless pinned.", false, e.stdout)
	var o demo.Options
	fs.IntVar(&o.Events, "events", 0, "stop after this many relayed events (0: run until Ctrl-C)")
	fs.Float64Var(&o.Rate, "rate", 2, "deliveries per second sent by the simulator")
	fs.StringVar(&o.Listen, "listen", "", "relay delivery listener host:port (default 127.0.0.1, a free port)")
	fs.StringVar(&o.Admin, "admin", "", "relay admin listener host:port (default 127.0.0.1, a free port)")
	fs.StringVar(&o.NATS, "nats", "", "embedded NATS server host:port (default 127.0.0.1, a free port)")
	fs.StringVar(&o.API, "api", "", "Datagrid simulator host:port (default 127.0.0.1, a free port)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{"demo takes no arguments, only flags"}
	}
	if o.Rate <= 0 || o.Events < 0 {
		return &usageError{"--rate must be above 0 and --events 0 or more"}
	}
	o.Build = buildInfo()
	return demo.Run(ctx, o, e.stdout, e.stderr)
}
