// Package server runs the relay: the NATS connection, the public delivery
// listener and the private admin listener, and their orderly shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/ingress"
	"github.com/datagrid-relay/relay/internal/metrics"
)

// Options are what Run needs besides the configuration.
type Options struct {
	Config   config.Config
	Log      *zap.Logger
	Registry *prometheus.Registry
	Build    metrics.BuildInfo
	// Listening, if set, is called once both listeners are open, with their
	// addresses (useful when the configuration asks for port 0).
	Listening func(public, admin net.Addr)
}

// Run serves until ctx ends or a part fails for good: build the parts,
// listen, run, then shut down (see shutdown). It returns nil after a clean
// shutdown.
func Run(ctx context.Context, o Options) error {
	cfg, log := o.Config, o.Log
	m := metrics.New(o.Registry, o.Build)
	parts, err := Build(cfg, "datagrid-relay/"+o.Build.Version, log, m)
	if err != nil {
		return err
	}
	defer parts.Conn.Close() // a no-op after shutdown

	ready := newReadiness(m, parts)
	public, admin := servers(cfg, log, o.Registry, ready, ingress.NewHandler(ingress.Config{
		Keyring: parts.Keyring, Publisher: parts.Publisher, Metrics: m, Log: log.Named("ingress"),
		Tolerance: cfg.Tolerance, MaxInflightBytes: cfg.MaxInflight,
		JetStream: cfg.PublishMode == config.ModeJetStream,
	}), m)

	publicLn, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on RELAY_LISTEN_ADDR: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		_ = publicLn.Close()
		return fmt.Errorf("listen on RELAY_ADMIN_ADDR: %w", err)
	}
	log.Info("relay started",
		zap.String("public_addr", publicLn.Addr().String()), zap.String("delivery_path", cfg.DeliveryPath()),
		zap.String("admin_addr", adminLn.Addr().String()), zap.String("publish_mode", cfg.PublishMode),
		zap.String("subjects", parts.Publisher.Subjects()), zap.Bool("self_registration", parts.Registrar != nil))
	if o.Listening != nil {
		o.Listening(publicLn.Addr(), adminLn.Addr())
	}

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var background sync.WaitGroup
	fatal := make(chan error, 3)
	background.Go(func() { parts.Publisher.Run(bg) })
	background.Go(func() { ready.run(bg) })
	if parts.Registrar != nil {
		background.Go(func() {
			if err := parts.Registrar.Run(bg); err != nil {
				fatal <- err
			}
		})
	}
	go serve(public, publicLn, "public listener", fatal)
	go serve(admin, adminLn, "admin listener", fatal)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-fatal:
		log.Error("cannot go on, shutting down", zap.Error(runErr))
	}
	stopBG()
	shutdown(ctx, cfg, log, ready, &background, public, admin, parts, runErr == nil)
	log.Info("relay stopped")
	return runErr
}

// shutdown stops the relay in this order, all within RELAY_SHUTDOWN_TIMEOUT:
//  1. readiness turns false, so load balancers stop sending;
//  2. the background loops (stream keeper, registrar, readiness) end;
//  3. the public listener stops accepting and in-flight deliveries finish
//     (each still waits for its JetStream ack);
//  4. with RELAY_DEREGISTER_ON_SHUTDOWN, after a clean run, the webhook is
//     deleted at Datagrid;
//  5. NATS is drained, after the last publish;
//  6. the admin listener stops last, so /metrics and /readyz answer
//     throughout.
func shutdown(ctx context.Context, cfg config.Config, log *zap.Logger, ready *readiness, background *sync.WaitGroup,
	public, admin *http.Server, parts *Parts, clean bool) {
	ready.stopping.Store(true)
	_ = ready.observe() // the gauges say "not ready" before the listener stops
	background.Wait()
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := public.Shutdown(deadline); err != nil {
		log.Warn("in-flight deliveries cut off at the shutdown deadline", zap.Error(err))
		_ = public.Close()
	}
	if parts.Registrar != nil && cfg.DeregisterOnShutdown && clean {
		if ids, err := parts.Registrar.Deregister(deadline); err != nil {
			log.Warn("deregister on shutdown incomplete", zap.Error(err))
		} else {
			log.Info("deregistered on shutdown (RELAY_DEREGISTER_ON_SHUTDOWN)", zap.Strings("deleted_webhooks", ids))
		}
	}
	if err := parts.Conn.Shutdown(deadline); err != nil {
		log.Warn("nats drain incomplete", zap.Error(err))
	}
	if err := admin.Shutdown(deadline); err != nil {
		_ = admin.Close()
	}
}

// servers returns the public and the admin HTTP servers. The public one's
// RELAY_READ_TIMEOUT covers headers and body alike.
func servers(cfg config.Config, log *zap.Logger, reg *prometheus.Registry, ready *readiness, delivery http.Handler, m *metrics.Metrics) (public, admin *http.Server) {
	public = &http.Server{
		Handler:           publicRoutes(cfg.DeliveryPath(), delivery, m.UnknownPath),
		ReadHeaderTimeout: cfg.ReadTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout + cfg.PublishTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http.public")),
	}
	admin = &http.Server{
		Handler:           adminRoutes(reg, ready),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http.admin")),
	}
	return public, admin
}

func serve(s *http.Server, ln net.Listener, name string, fatal chan<- error) {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fatal <- fmt.Errorf("%s: %w", name, err)
	}
}
