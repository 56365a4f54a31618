package datagridtest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Start returns a new Server listening on a loopback port, plain HTTP.
// Close it when done.
func Start(opts Options) (*Server, error) {
	s := NewServer(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s.httpServer = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Longer than any latency a test sets, so SetLatency delays
		// answers rather than breaking them.
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  time.Minute,
	}
	s.url = "http://" + ln.Addr().String() + apiPrefix
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		_ = s.httpServer.Serve(ln) // always ErrServerClosed once Close runs
	}()
	return s, nil
}

// URL is the API base, e.g. "http://127.0.0.1:41234/v1", for a Server made
// by Start; "" for one made by NewServer.
func (s *Server) URL() string { return s.url }

// Close stops a Server made by Start: it closes the listener and every
// connection and returns once nothing is served any more. It does nothing
// for a Server made by NewServer, whose Handler the caller serves.
func (s *Server) Close() error {
	if s.httpServer == nil {
		return nil
	}
	err := s.httpServer.Close()
	<-s.served
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
