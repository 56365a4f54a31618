package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/datagrid-relay/relay/internal/metrics"
)

// readiness answers /readyz and exports the same answer as
// datagrid_relay_ready and datagrid_relay_ready_check{check}: every check
// must pass, and the relay must not be shutting down. Checks are cheap and
// do no I/O (they read what the background loops found), so they run on
// every /readyz and every second for the gauges. Checks are added before
// the relay serves; add is not safe for concurrent use.
type readiness struct {
	stopping atomic.Bool
	checks   []namedCheck
	m        *metrics.Metrics
}

type namedCheck struct {
	name string
	fn   func() error
}

// newReadiness returns the readiness of the relay made of parts: NATS
// connected, the stream fit (jetstream mode), a signing secret known.
func newReadiness(m *metrics.Metrics, parts *Parts) *readiness {
	r := &readiness{m: m}
	// The connection alone: Publisher.Check also fails when the stream
	// does, which would name NATS as the reason for a missing stream.
	r.add("nats", func() error {
		if !parts.Conn.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	r.add("stream", parts.Publisher.StreamCheck)
	if parts.Registrar != nil {
		r.add("signing_secret", parts.Registrar.Check)
	} else {
		r.add("signing_secret", func() error { return nil }) // static secrets are always there
	}
	return r
}

func (r *readiness) add(name string, fn func() error) {
	r.checks = append(r.checks, namedCheck{name, fn})
	r.m.ReadyCheck.WithLabelValues(name)
}

// observe runs every check, sets the gauges and returns the first reason
// the relay is not ready, or nil.
func (r *readiness) observe() error {
	var first error
	if r.stopping.Load() {
		first = errors.New("shutting down")
	}
	for _, c := range r.checks {
		err := c.fn()
		ok := 1.0
		if err != nil {
			ok = 0
			if first == nil {
				first = errors.New(c.name + ": " + err.Error())
			}
		}
		r.m.ReadyCheck.WithLabelValues(c.name).Set(ok)
	}
	if first != nil {
		r.m.Ready.Set(0)
	} else {
		r.m.Ready.Set(1)
	}
	return first
}

// run keeps the gauges current until ctx ends.
func (r *readiness) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		_ = r.observe()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
