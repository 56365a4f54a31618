package server

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/bootstrap"
	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/publish"
	"github.com/datagrid-relay/relay/internal/signature"
)

// Parts are the relay's pieces, wired from the configuration by Build: the
// gateway (Run) and the one-shot commands (status, rotate, deregister,
// trigger) use the same ones.
type Parts struct {
	Conn      *publish.Conn
	Publisher *publish.Publisher
	// Keyring holds the secrets deliveries are verified with: static ones
	// from RELAY_WEBHOOK_SECRET, or the registrar's.
	Keyring signature.Keyring
	// Registrar is nil when the webhook is managed by hand.
	Registrar *bootstrap.Registrar
}

// Build connects to NATS (in the background if no server answers yet) and
// wires the publisher, the keyring and, when the relay registers its own
// webhook, the registrar. Nothing else does I/O until it runs. client names
// this process to NATS and to the Datagrid API ("datagrid-relay/1.2.3");
// the caller shuts Conn down.
func Build(cfg config.Config, client string, log *zap.Logger, m *metrics.Metrics) (*Parts, error) {
	nc, err := publish.Connect(publish.ConnConfig{
		URLs: cfg.NATSURL, Name: client,
		Creds: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKeySeedFile,
		User: cfg.NATSUser, Password: cfg.NATSPassword, Token: cfg.NATSToken,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
		ReconnectWait: cfg.NATSReconnectWait,
	}, log.Named("nats"), m)
	if err != nil {
		return nil, err
	}
	p := &Parts{Conn: nc}
	p.Publisher, err = publish.New(nc.Conn, publish.Config{
		JetStream: cfg.PublishMode == config.ModeJetStream, SubjectPrefix: cfg.SubjectPrefix,
		Stream: cfg.Stream, Replicas: cfg.StreamReplicas, MaxAge: cfg.StreamMaxAge,
		DedupeWindow: cfg.DedupeWindow, Tolerance: cfg.Tolerance, MaxBodyBytes: cfg.MaxBodyBytes,
		Source: eventSource(cfg.BaseURL), Timeout: cfg.PublishTimeout,
	}, m, log.Named("stream"))
	if err != nil {
		nc.Close()
		return nil, err
	}

	// The signing secrets: given by hand, or kept by the registrar.
	if !cfg.Registering() {
		p.Keyring = signature.NewStatic(cfg.WebhookSecrets)
		m.RegistrationHealthy.Set(1) // nothing to register
	} else if p.Registrar, err = newRegistrar(cfg, nc, client, log.Named("registration"), m); err != nil {
		nc.Close()
		return nil, err
	} else {
		p.Keyring = p.Registrar.Keyring()
	}
	m.CountSecrets(func() int { return len(p.Keyring.Accepted()) })
	return p, nil
}

// newRegistrar builds the registrar: the Datagrid client, instrumented, and
// the key-value store.
func newRegistrar(cfg config.Config, nc *publish.Conn, client string, log *zap.Logger, m *metrics.Metrics) (*bootstrap.Registrar, error) {
	m.DeclareAPIOps(datagrid.Ops())
	api, err := datagrid.New(datagrid.Config{
		BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, UserAgent: client,
		Observe: func(op string, status int, d time.Duration, _ error) { m.APIRequest(op, status, d.Seconds()) },
	})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc.Conn)
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

// eventSource is the CloudEvents source of every message: the origin of the
// Datagrid API the events come from (config has checked the URL).
func eventSource(baseURL string) string {
	u, _ := url.Parse(baseURL)
	return u.Scheme + "://" + u.Host
}
