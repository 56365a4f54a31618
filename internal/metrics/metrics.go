// Package metrics defines every Prometheus metric the relay exports.
//
// All names start with datagrid_relay_, use base units, end counters in
// _total and histograms of time in _seconds. Label values come from small
// fixed sets, declared by the packages that produce them (ingress for
// delivery outcomes, bootstrap for reconcile outcomes, the Datagrid client
// for API operations), which create every series at zero, so dashboards and
// alerts see a series before its first event.
package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "datagrid_relay"

// BuildInfo identifies the running binary.
type BuildInfo struct {
	Version   string
	Revision  string
	GoVersion string
}

// Metrics holds the relay's metrics. Its fields are safe for concurrent use.
type Metrics struct {
	Deliveries       *prometheus.CounterVec
	DeliveryDuration *prometheus.HistogramVec
	InFlight         prometheus.Gauge
	BodyLimit        prometheus.Gauge
	LastPublished    prometheus.Gauge
	secrets          prometheus.GaugeFunc
	countSecrets     atomic.Pointer[func() int]
	UnknownPath      prometheus.Counter
	InflightBytes    prometheus.Gauge
	InflightBudget   prometheus.Gauge

	Ready      prometheus.Gauge
	ReadyCheck *prometheus.GaugeVec

	Publishes       prometheus.Counter
	PublishFailures prometheus.Counter
	PublishDuration prometheus.Histogram

	NATSConnected   prometheus.Gauge
	NATSDisconnects prometheus.Counter
	NATSReconnects  prometheus.Counter
	NATSErrors      prometheus.Counter

	RegistrationHealthy  prometheus.Gauge
	Reconciles           *prometheus.CounterVec
	LastReconcileSuccess prometheus.Gauge
	SecretCreated        prometheus.Gauge
	APIRequests          *prometheus.CounterVec
	APIRequestFailures   *prometheus.CounterVec
	APIRequestDuration   *prometheus.HistogramVec
}

// New creates the metrics and registers them, with the Go and process
// collectors and datagrid_relay_build_info, on reg. It is a list of
// declarations, long by nature.
func New(reg prometheus.Registerer, info BuildInfo) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "deliveries_total",
			Help: "Deliveries answered, by event type (known types, other, unknown) and outcome.",
		}, []string{"event_type", "outcome"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "delivery_duration_seconds",
			Help:    "Time from a delivery's arrival to its answer, by outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "deliveries_in_flight",
			Help: "Deliveries being handled right now.",
		}),
		BodyLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "delivery_body_limit_bytes",
			Help: "Largest delivery body accepted now: RELAY_MAX_BODY_BYTES capped by the NATS server's max_payload.",
		}),
		LastPublished: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "last_published_timestamp_seconds",
			Help: "Unix time of the last delivery stored on NATS (0 before the first).",
		}),
		UnknownPath: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "unknown_path_requests_total",
			Help: "Requests to the public listener outside the delivery path, answered 404.",
		}),
		Publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_publishes_total",
			Help: "Messages published to NATS, successful or not.",
		}),
		PublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_publish_failures_total",
			Help: "Messages NATS did not confirm (timeout, no stream, disconnected).",
		}),
		PublishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "nats_publish_duration_seconds",
			Help:    "Time from publish to NATS confirmation (JetStream ack, or flush in core mode).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		NATSConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "nats_connected",
			Help: "1 while connected to a NATS server, else 0.",
		}),
		NATSDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_disconnects_total",
			Help: "Times the NATS connection was lost.",
		}),
		NATSReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_reconnects_total",
			Help: "Times the NATS connection was re-established.",
		}),
		NATSErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_async_errors_total",
			Help: "Asynchronous errors reported by the NATS connection.",
		}),
	}
	m.secrets = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "signing_secrets",
		Help: "Signing secrets accepted now; 0 means deliveries cannot be verified.",
	}, func() float64 {
		if f := m.countSecrets.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.InflightBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "inflight_body_bytes",
		Help: "Memory reserved right now for delivery bodies being read or published.",
	})
	m.InflightBudget = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "inflight_body_budget_bytes",
		Help: "RELAY_MAX_INFLIGHT_BYTES: the most memory held for delivery bodies at once; past it deliveries get 503 (outcome overloaded).",
	})
	m.Ready = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "ready",
		Help: "1 when /readyz answers 200 (the relay can take deliveries), else 0.",
	})
	m.ReadyCheck = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "ready_check",
		Help: "1 when the readiness check passes, else 0, by check (nats, stream, signing_secret).",
	}, []string{"check"})
	m.RegistrationHealthy = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "registration_healthy",
		Help: "1 when the webhook at Datagrid matches the configuration and its secret is known (always 1 with a static secret), else 0.",
	})
	m.Reconciles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "reconciles_total",
		Help: "Registration reconciles, by outcome (ok, repaired, failed).",
	}, []string{"outcome"})
	m.LastReconcileSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "last_reconcile_success_timestamp_seconds",
		Help: "Unix time of the last reconcile that finished (0 before the first).",
	})
	m.SecretCreated = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "secret_created_timestamp_seconds",
		Help: "Unix time the current signing secret was created; its age is time() minus this (0 with a static secret).",
	})
	m.APIRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "api_requests_total",
		Help: "HTTP requests to the Datagrid API, by operation and status class (2xx, 4xx, 5xx, error for no answer).",
	}, []string{"operation", "status_class"})
	m.APIRequestFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "api_request_failures_total",
		Help: "Datagrid API requests that got no 2xx answer, by operation.",
	}, []string{"operation"})
	m.APIRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "api_request_duration_seconds",
		Help:    "Time of one HTTP request to the Datagrid API, by operation.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"operation"})

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; labels identify the running build.",
		ConstLabels: prometheus.Labels{"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion},
	})
	buildInfo.Set(1)

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.Deliveries, m.DeliveryDuration, m.InFlight, m.BodyLimit, m.LastPublished, m.secrets, m.UnknownPath,
		m.InflightBytes, m.InflightBudget, m.Ready, m.ReadyCheck,
		m.Publishes, m.PublishFailures, m.PublishDuration,
		m.NATSConnected, m.NATSDisconnects, m.NATSReconnects, m.NATSErrors,
		m.RegistrationHealthy, m.Reconciles, m.LastReconcileSuccess, m.SecretCreated,
		m.APIRequests, m.APIRequestFailures, m.APIRequestDuration,
	)
	return m
}

// CountSecrets makes datagrid_relay_signing_secrets report count(), read at
// every scrape: the keyring chosen at start, static or managed, is the one
// source of the number.
func (m *Metrics) CountSecrets(count func() int) { m.countSecrets.Store(&count) }

// DeclareAPIOps creates the API request series of every operation at zero,
// so that alerts and dashboards see them before the first call.
func (m *Metrics) DeclareAPIOps(ops []string) {
	for _, op := range ops {
		m.APIRequestFailures.WithLabelValues(op)
		m.APIRequestDuration.WithLabelValues(op)
		for _, c := range []string{"2xx", "4xx", "5xx", "error"} { // as APIRequest classes them
			m.APIRequests.WithLabelValues(op, c)
		}
	}
}

// APIRequest records one HTTP request to the Datagrid API: its operation,
// its status (0 when there was no answer) and its duration.
func (m *Metrics) APIRequest(op string, status int, seconds float64) {
	class := "error"
	switch {
	case status >= 200 && status < 300:
		class = "2xx"
	case status >= 400 && status < 500:
		class = "4xx"
	case status >= 500:
		class = "5xx"
	}
	m.APIRequests.WithLabelValues(op, class).Inc()
	if class != "2xx" {
		m.APIRequestFailures.WithLabelValues(op).Inc()
	}
	m.APIRequestDuration.WithLabelValues(op).Observe(seconds)
}
