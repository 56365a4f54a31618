// Package server runs the relay: the NATS connection, the public delivery
// listener and the private admin listener, and their orderly shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/ingress"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/publish"
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

// Run serves until ctx ends, then shuts down in order: readiness false,
// stop accepting and finish in-flight deliveries, drain NATS, stop the
// admin listener. The whole sequence is bounded by RELAY_SHUTDOWN_TIMEOUT.
// It returns nil after a clean shutdown.
func Run(ctx context.Context, o Options) error {
	cfg, log := o.Config, o.Log
	if cfg.Registering() {
		return errors.New("self-registration is not available in this build: set RELAY_WEBHOOK_SECRET")
	}
	m := metrics.New(o.Registry, o.Build)

	nc, err := publish.Connect(publish.ConnConfig{
		URLs: cfg.NATSURL, Name: "datagrid-relay " + o.Build.Version,
		Creds: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKeySeedFile,
		User: cfg.NATSUser, Password: cfg.NATSPassword, Token: cfg.NATSToken,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
		ReconnectWait: cfg.NATSReconnectWait,
	}, log.Named("nats"), m)
	if err != nil {
		return err
	}
	defer nc.Close() // a no-op after a successful drain

	pub, err := publish.New(nc, publish.Config{
		Mode: cfg.PublishMode, SubjectPrefix: cfg.SubjectPrefix, Stream: cfg.Stream,
		Replicas: cfg.StreamReplicas, MaxAge: cfg.StreamMaxAge, DedupeWindow: cfg.DedupeWindow,
		Source: eventSource(cfg.BaseURL),
	}, m)
	if err != nil {
		return err
	}

	keys := staticKeys(cfg.WebhookSecrets)
	m.Secrets.Set(float64(len(keys.Secrets)))

	ready := &readiness{}
	ready.add("nats", pub.Check)
	stream := newStreamKeeper(pub, log)
	if cfg.PublishMode == publish.ModeJetStream {
		ready.add("stream", stream.check)
	}
	ready.add("signing secret", func(context.Context) error {
		if len(keys.Keys().Secrets) == 0 {
			return errors.New("no signing secret known yet")
		}
		return nil
	})

	delivery := ingress.NewHandler(ingress.Config{
		Keys: keys, Publisher: pub, Metrics: m, Log: log.Named("ingress"),
		Tolerance: cfg.Tolerance, MaxBodyBytes: cfg.MaxBodyBytes, PublishTimeout: cfg.PublishTimeout,
	})
	public := &http.Server{
		Handler:           publicRoutes(cfg.DeliveryPath(), delivery, m.UnknownPath),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout + cfg.PublishTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http.public")),
	}
	admin := &http.Server{
		Handler:           adminRoutes(o.Registry, ready),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http.admin")),
	}

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
		zap.String("subjects", pub.Subjects()), zap.Int("signing_secrets", len(keys.Secrets)))
	if o.Listening != nil {
		o.Listening(publicLn.Addr(), adminLn.Addr())
	}

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		if cfg.PublishMode == publish.ModeJetStream {
			stream.run(bg)
		}
	}()

	serveErr := make(chan error, 2)
	go func() { serveErr <- serve(public, publicLn) }()
	go func() { serveErr <- serve(admin, adminLn) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-serveErr:
		log.Error("listener stopped, shutting down", zap.Error(runErr))
	}

	// Shutdown: readiness false, finish deliveries, drain NATS, stop admin.
	ready.stopping.Store(true)
	stopBG()
	<-streamDone
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := public.Shutdown(deadline); err != nil {
		log.Warn("in-flight deliveries cut off at the shutdown deadline", zap.Error(err))
		_ = public.Close()
	}
	if err := drain(deadline, nc); err != nil {
		log.Warn("nats drain incomplete", zap.Error(err))
	}
	if err := admin.Shutdown(deadline); err != nil {
		_ = admin.Close()
	}
	log.Info("relay stopped")
	return runErr
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// drain flushes what the connection still holds and closes it, waiting at
// most until ctx ends.
func drain(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsClosed() {
		select {
		case <-ctx.Done():
			nc.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// staticKeys holds secrets given by hand in RELAY_WEBHOOK_SECRET.
func staticKeys(secrets []string) ingress.StaticKeys {
	k := ingress.StaticKeys{}
	for _, s := range secrets {
		k.Secrets = append(k.Secrets, []byte(s))
	}
	return k
}

// eventSource is the CloudEvents source of every message: the origin of the
// Datagrid API the events come from.
func eventSource(baseURL string) string {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return "https://api.datagrid.com"
	}
	return u.Scheme + "://" + u.Host
}
