package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/metrics"
)

// ConnConfig says how to reach NATS. Exactly one way of authenticating
// may be set; the caller validates that.
type ConnConfig struct {
	URLs          []string
	Name          string // connection name shown by the server (nats server report connections)
	Creds         string // credentials file (JWT and seed)
	NKeySeedFile  string
	User          string
	Password      string
	Token         string
	TLSCA         string
	TLSCert       string
	TLSKey        string
	ReconnectWait time.Duration
}

// Connect (a list of options, long by nature) opens a NATS connection that
// reconnects forever and never buffers
// publishes while disconnected: a publish then fails at once, so a delivery
// is answered 503 instead of 2xx for a message that is not yet stored.
// Connection events are logged and counted. If no server answers yet,
// Connect still returns a connection that keeps trying in the background.
func Connect(cfg ConnConfig, log *zap.Logger, m *metrics.Metrics) (*Conn, error) {
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			m.NATSConnected.Set(1)
			log.Info("nats connected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			m.NATSConnected.Set(0)
			if err == nil {
				return // our own close or drain, not a lost connection
			}
			m.NATSDisconnects.Inc()
			log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			m.NATSConnected.Set(1)
			m.NATSReconnects.Inc()
			log.Info("nats reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			m.NATSConnected.Set(0)
			log.Info("nats connection closed")
			close(closed) // the last callback nats.go makes
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			m.NATSErrors.Inc()
			log.Warn("nats error", zap.Error(err))
		}),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("load nkey seed file: %w", err)
		}
		opts = append(opts, opt)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		// nats.go errors name files and servers, never passwords or tokens.
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if nc.IsConnected() {
		// The connect callback runs asynchronously; the gauge must not lag
		// behind a connection that readiness already sees.
		m.NATSConnected.Set(1)
	}
	return &Conn{Conn: nc, closed: closed}, nil
}

// Conn is a NATS connection from Connect, which knows when it has closed.
type Conn struct {
	*nats.Conn
	closed chan struct{}
}

// Shutdown drains the connection (pending messages flushed, subscriptions
// finished) and waits until it is closed and its last callback has run, so
// nothing logs after it returns. When ctx ends first the connection is
// closed at once.
func (c *Conn) Shutdown(ctx context.Context) error {
	var err error
	if derr := c.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		err = fmt.Errorf("drain: %w", derr)
		c.Close()
	}
	select {
	case <-c.closed:
		return err
	case <-ctx.Done():
		c.Close()
		<-c.closed
		return ctx.Err()
	}
}
