package main

import (
	"context"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/logging"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/server"
)

func runServe(ctx context.Context, e env, args []string) error {
	fs := newFlags("serve", "Run the gateway: receive Datagrid deliveries, verify them, publish them to NATS.\nConfigured by environment variables only.", true, e.stdout)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	cfg, err := config.Load(e.getenv)
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.LogLevel, cfg.LogFormat, e.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log.Info("relay starting", zap.String("version", version), zap.String("commit", commit))
	return server.Run(ctx, server.Options{
		Config:   cfg,
		Log:      log,
		Registry: prometheus.NewRegistry(),
		Build:    buildInfo(),
	})
}

func buildInfo() metrics.BuildInfo {
	return metrics.BuildInfo{Version: version, Revision: revision(), GoVersion: runtime.Version()}
}
