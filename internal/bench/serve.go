package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ListeningPrefix starts the line a served target writes once it takes
// requests: "listening 127.0.0.1:PORT".
const ListeningPrefix = "listening "

// newHTTPServer gives the baseline and the bare server the same timeouts
// as the relay's public listener.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
}

// serveUntil serves h on a free loopback port, announces it on out and
// stops when ctx ends, finishing in-flight requests.
func serveUntil(ctx context.Context, h http.Handler, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := newHTTPServer(h)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if _, err := fmt.Fprintf(out, "%s%s\n", ListeningPrefix, ln.Addr()); err != nil {
		_ = srv.Close()
		return fmt.Errorf("announce address: %w", err)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// ServeBare runs the bare server until ctx ends.
func ServeBare(ctx context.Context, out io.Writer) error {
	return serveUntil(ctx, NewBare(), out)
}

// ServeBaseline connects to natsURL, ensures the baseline's stream and
// runs the baseline relay until ctx ends, then drains the connection.
func ServeBaseline(ctx context.Context, natsURL string, secret []byte, stream, prefix string, out io.Writer) error {
	nc, err := nats.Connect(natsURL, nats.Name("relaybench-baseline"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = EnsureStream(sctx, js, stream, prefix)
	cancel()
	if err != nil {
		return err
	}
	h := NewBaseline(BaselineConfig{
		JS: js, Secret: secret, Stream: stream, Prefix: prefix,
		Source: "https://api.datagrid.com", Tolerance: 5 * time.Minute,
	})
	if err := serveUntil(ctx, h, out); err != nil {
		return err
	}
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}
