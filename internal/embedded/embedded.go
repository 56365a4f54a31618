// Package embedded runs a NATS server with JetStream inside the process,
// for `relay demo` and for the tests: one way to start it, one set of
// defaults (no logging, no signal handlers, storage in a given directory).
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options returns the options of one JetStream server listening on
// host:port (server.RANDOM_PORT for any free port) and storing in dir.
func Options(host string, port int, dir string) *server.Options {
	return &server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
}

// Start runs a server with opts and waits until it takes connections. The
// caller shuts it down.
func Start(opts *server.Options) (*server.Server, error) {
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats server not ready within 10s")
	}
	return s, nil
}
