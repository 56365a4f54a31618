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
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/bootstrap"
	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/datagrid"
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
	m := metrics.New(o.Registry, o.Build)

	nc, err := publish.Connect(ConnConfig(cfg, "datagrid-relay "+o.Build.Version), log.Named("nats"), m)
	if err != nil {
		return err
	}
	defer nc.Close() // a no-op after Shutdown

	pub, err := publish.New(nc.Conn, publish.Config{
		Mode: cfg.PublishMode, SubjectPrefix: cfg.SubjectPrefix, Stream: cfg.Stream,
		Replicas: cfg.StreamReplicas, MaxAge: cfg.StreamMaxAge, DedupeWindow: cfg.DedupeWindow,
		Source: eventSource(cfg.BaseURL),
	}, m)
	if err != nil {
		return err
	}

	ready := &readiness{}
	ready.add("nats", pub.Check)
	stream := newStreamKeeper(pub, log)
	if cfg.PublishMode == publish.ModeJetStream {
		ready.add("stream", stream.check)
	}

	// The signing secrets: given by hand, or kept by the registrar.
	var keys ingress.Keyring
	var registrar *bootstrap.Registrar
	if cfg.Registering() {
		registrar, err = NewRegistrar(cfg, nc.Conn, o.Build.Version, log.Named("registration"), m)
		if err != nil {
			return err
		}
		keys = registrar.Keys()
		ready.add("registration", registrar.Check)
	} else {
		static := staticKeys(cfg.WebhookSecrets)
		keys = static
		m.Secrets.Set(float64(len(static.Secrets)))
		m.RegistrationHealthy.Set(1) // nothing to register
	}

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
		zap.String("subjects", pub.Subjects()), zap.Bool("self_registration", registrar != nil))
	if o.Listening != nil {
		o.Listening(publicLn.Addr(), adminLn.Addr())
	}

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var background sync.WaitGroup
	if cfg.PublishMode == publish.ModeJetStream {
		background.Go(func() { stream.run(bg) })
	}
	fatal := make(chan error, 3)
	if registrar != nil {
		background.Go(func() {
			if err := registrar.Run(bg); err != nil {
				fatal <- err
			}
		})
	}
	go func() {
		if err := serve(public, publicLn); err != nil {
			fatal <- fmt.Errorf("public listener: %w", err)
		}
	}()
	go func() {
		if err := serve(admin, adminLn); err != nil {
			fatal <- fmt.Errorf("admin listener: %w", err)
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-fatal:
		log.Error("cannot go on, shutting down", zap.Error(runErr))
	}

	// Shutdown: readiness false, finish deliveries, drain NATS, stop admin.
	ready.stopping.Store(true)
	stopBG()
	background.Wait()
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := public.Shutdown(deadline); err != nil {
		log.Warn("in-flight deliveries cut off at the shutdown deadline", zap.Error(err))
		_ = public.Close()
	}
	if registrar != nil && cfg.DeregisterOnShutdown && runErr == nil {
		if ids, err := registrar.Deregister(deadline); err != nil {
			log.Warn("deregister on shutdown incomplete", zap.Error(err))
		} else {
			log.Info("deregistered on shutdown (RELAY_DEREGISTER_ON_SHUTDOWN)", zap.Strings("deleted_webhooks", ids))
		}
	}
	if err := nc.Shutdown(deadline); err != nil {
		log.Warn("nats drain incomplete", zap.Error(err))
	}
	if err := admin.Shutdown(deadline); err != nil {
		_ = admin.Close()
	}
	log.Info("relay stopped")
	return runErr
}

// ConnConfig is how cfg reaches NATS, under the connection name name.
func ConnConfig(cfg config.Config, name string) publish.ConnConfig {
	return publish.ConnConfig{
		URLs: cfg.NATSURL, Name: name,
		Creds: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKeySeedFile,
		User: cfg.NATSUser, Password: cfg.NATSPassword, Token: cfg.NATSToken,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
		ReconnectWait: cfg.NATSReconnectWait,
	}
}

// NewRegistrar builds the registrar for cfg on nc: the Datagrid client,
// instrumented, and the key-value store. It does no I/O.
func NewRegistrar(cfg config.Config, nc *nats.Conn, version string, log *zap.Logger, m *metrics.Metrics) (*bootstrap.Registrar, error) {
	api, err := datagrid.New(datagrid.Config{
		BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, UserAgent: "datagrid-relay/" + version,
		Observe: func(op string, status int, d time.Duration, _ error) { m.APIRequest(op, status, d.Seconds()) },
	})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	host, _ := os.Hostname()
	return bootstrap.NewRegistrar(api, bootstrap.NewStore(js, cfg.StateBucket, cfg.StreamReplicas), bootstrap.Config{
		PublicURL: cfg.PublicURL, Events: cfg.Events,
		ReconcileInterval: cfg.ReconcileInterval, RotationGrace: cfg.RotationGrace,
		Instance: host + "/" + strconv.Itoa(os.Getpid()),
	}, log, m, nil), nil
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
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
