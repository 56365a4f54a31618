package server

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// publicRoutes serves deliveries on path and nothing else. The listener is
// exposed to the internet, so it offers no other surface.
func publicRoutes(path string, delivery http.Handler, notFound prometheus.Counter) http.Handler {
	mux := http.NewServeMux()
	if path == "/" {
		path = "/{$}" // exactly the root, not every path
	}
	mux.Handle(path, delivery)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		notFound.Inc()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"not found"}` + "\n"))
	})
	return mux
}

// adminRoutes serves /metrics, /healthz and /readyz on the private listener.
func adminRoutes(reg *prometheus.Registry, ready *readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready.check(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
