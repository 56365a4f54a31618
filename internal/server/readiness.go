package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// readiness answers /readyz: every check must pass, and the relay must not
// be shutting down.
type readiness struct {
	stopping atomic.Bool
	mu       sync.Mutex
	checks   []namedCheck
}

type namedCheck struct {
	name string
	fn   func(context.Context) error
}

func (r *readiness) add(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, namedCheck{name, fn})
}

// check returns the first reason the relay is not ready, or nil.
func (r *readiness) check(ctx context.Context) error {
	if r.stopping.Load() {
		return errors.New("shutting down")
	}
	r.mu.Lock()
	checks := r.checks
	r.mu.Unlock()
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			return errors.New(c.name + ": " + err.Error())
		}
	}
	return nil
}
