package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/publish"
)

// streamKeeper makes sure the JetStream stream exists, retrying with
// backoff while NATS is unreachable or the stream cannot be created, and
// remembers why it is not there yet for /readyz.
type streamKeeper struct {
	pub *publish.Publisher
	log *zap.Logger

	mu      sync.Mutex
	ok      bool
	lastErr error
}

func newStreamKeeper(pub *publish.Publisher, log *zap.Logger) *streamKeeper {
	return &streamKeeper{pub: pub, log: log, lastErr: errors.New("not checked yet")}
}

// run ensures the stream, retrying until it succeeds or ctx ends.
func (k *streamKeeper) run(ctx context.Context) {
	wait := 250 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := k.pub.EnsureStream(attempt, func(msg string) { k.log.Warn(msg) })
		cancel()
		k.mu.Lock()
		k.ok, k.lastErr = err == nil, err
		k.mu.Unlock()
		if err == nil {
			k.log.Info("stream ready")
			return
		}
		k.log.Warn("stream not ready, retrying", zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

// check is the readiness check: nil once the stream was ensured, else why
// not. That it is still reachable is the publisher's own check.
func (k *streamKeeper) check(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.ok {
		return k.lastErr
	}
	return nil
}
