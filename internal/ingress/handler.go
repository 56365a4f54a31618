// Package ingress receives Datagrid's webhook deliveries: it checks the
// signature header, reads the body within a memory budget, verifies the
// signature, reads the envelope and hands the delivery to a publisher,
// answering 2xx only once the publisher has stored it.
package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/publish"
	"github.com/datagrid-relay/relay/internal/signature"
)

// Publisher stores a delivery on the bus.
type Publisher interface {
	// Publish returns nil only once the message is stored (or, in core mode,
	// received by the server); it gives up after its own timeout or when
	// ctx ends, whichever comes first. An error wrapping
	// publish.ErrTooLarge will never succeed. Safe for concurrent use.
	Publish(ctx context.Context, m publish.Message) (publish.Result, error)
	// BodyLimit is the largest body the bus accepts now. Cheap: it is
	// called once per delivery.
	BodyLimit() int64
}

// Outcome is what became of one delivery: one value per row of the
// contract's delivery table, the outcome label of
// datagrid_relay_deliveries_total.
type Outcome string

// The outcomes of a delivery.
const (
	OutcomePublished        Outcome = "published"          // 2xx, stored once (core mode: sent)
	OutcomeDuplicate        Outcome = "duplicate"          // 2xx, already stored
	OutcomeQuarantined      Outcome = "quarantined"        // 2xx, signed but unroutable: stored on <prefix>._quarantine
	OutcomeInvalidSignature Outcome = "invalid_signature"  // 401
	OutcomeStaleTimestamp   Outcome = "stale_timestamp"    // 401
	OutcomeTooLarge         Outcome = "too_large"          // 413
	OutcomeMalformed        Outcome = "malformed"          // 400: the body could not be read
	OutcomeMethodNotAllowed Outcome = "method_not_allowed" // 405
	OutcomeUnavailable      Outcome = "unavailable"        // 503: no secret yet, or the bus did not confirm
	OutcomeOverloaded       Outcome = "overloaded"         // 503: the memory budget for bodies is spent
)

// Outcomes lists every Outcome.
func Outcomes() []Outcome {
	return []Outcome{
		OutcomePublished, OutcomeDuplicate, OutcomeQuarantined, OutcomeInvalidSignature, OutcomeStaleTimestamp,
		OutcomeTooLarge, OutcomeMalformed, OutcomeMethodNotAllowed, OutcomeUnavailable, OutcomeOverloaded,
	}
}

// Config holds the handler's dependencies and limits.
type Config struct {
	Keyring   signature.Keyring
	Publisher Publisher
	Metrics   *metrics.Metrics
	Log       *zap.Logger
	Tolerance time.Duration
	// MaxInflightBytes is the budget of memory held for bodies at once.
	MaxInflightBytes int64
	// JetStream is true when a 2xx means stored (the answer says "stored"),
	// false in core mode (it says "published").
	JetStream bool
	Now       func() time.Time // defaults to time.Now
}

// RetryAfterSeconds is the Retry-After of every 503.
const RetryAfterSeconds = "5"

// NewHandler returns the delivery handler. It reads the request top to
// bottom: method, signature header, body within the limits, signature,
// envelope, publish, answer.
func NewHandler(cfg Config) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &handler{cfg: cfg, budget: newBudget(cfg.MaxInflightBytes, cfg.Metrics.InflightBytes),
		answers: answersStored, counted: map[counterKey]prometheus.Counter{}, timed: map[Outcome]prometheus.Observer{}}
	if !cfg.JetStream {
		h.answers = answersPublished
	}
	// Every series exists before its first event, and is looked up once.
	for _, o := range Outcomes() {
		for _, et := range event.Labels() {
			h.counted[counterKey{et, o}] = cfg.Metrics.Deliveries.WithLabelValues(et, string(o))
		}
		h.timed[o] = cfg.Metrics.DeliveryDuration.WithLabelValues(string(o))
	}
	cfg.Metrics.InflightBudget.Set(float64(cfg.MaxInflightBytes))
	return h
}

type handler struct {
	cfg     Config
	budget  *budget
	answers [3]string // new, duplicate, quarantined
	counted map[counterKey]prometheus.Counter
	timed   map[Outcome]prometheus.Observer
}

type counterKey struct {
	eventLabel string
	outcome    Outcome
}

// count records one answered delivery.
func (h *handler) count(eventType string, o Outcome, start time.Time) {
	h.counted[counterKey{event.Label(eventType), o}].Inc()
	h.timed[o].Observe(time.Since(start).Seconds())
}

// rejection is a refused delivery: its status, the short reason sent back
// and the outcome counted.
type rejection struct {
	status  int
	reason  string
	outcome Outcome
}

// ServeHTTP is the delivery, top to bottom in numbered steps, each a leaf
// call; it is long on purpose, so that the order of checks the contract
// fixes can be read in one place.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := h.cfg.Metrics
	m.InFlight.Inc()
	defer m.InFlight.Dec()

	eventType, outcome := "", OutcomePublished
	defer func() { h.count(eventType, outcome, start) }()
	reject := func(rj rejection, fields ...zap.Field) {
		outcome = rj.outcome
		h.refuse(w, r, rj, fields...)
	}

	// 1. Method.
	if r.Method != http.MethodPost {
		reject(rejection{http.StatusMethodNotAllowed, "method not allowed, use POST", OutcomeMethodNotAllowed})
		return
	}

	// 2. The signature header's shape and timestamp, before any of the
	// body is read: a request that fails them costs nothing more.
	signed, err := signature.Parse(r.Header.Values(signature.Header), h.cfg.Now(), h.cfg.Tolerance)
	if err != nil {
		o := OutcomeInvalidSignature
		if errors.Is(err, signature.ErrStaleTimestamp) {
			o = OutcomeStaleTimestamp
		}
		reject(rejection{http.StatusUnauthorized, err.Error(), o})
		return
	}
	secrets := h.cfg.Keyring.Accepted()
	if len(secrets) == 0 {
		reject(rejection{http.StatusServiceUnavailable, "no signing secret known yet", OutcomeUnavailable})
		return
	}

	// 3. The body, within the limit in force and the memory budget.
	limit := h.cfg.Publisher.BodyLimit()
	var held lease
	body, err := h.budget.read(r.Body, r.ContentLength, limit, &held)
	defer held.release()
	switch {
	case errors.Is(err, errTooLarge):
		reject(rejection{http.StatusRequestEntityTooLarge, "body larger than " + strconv.FormatInt(limit, 10) + " bytes", OutcomeTooLarge})
		return
	case errors.Is(err, errOverBudget):
		reject(rejection{http.StatusServiceUnavailable, "relay busy, retry later", OutcomeOverloaded})
		return
	case err != nil:
		reject(rejection{http.StatusBadRequest, "could not read body", OutcomeMalformed}, zap.Error(err))
		return
	}

	// 4. The signature over the body.
	secret, err := signed.Verify(body, secrets)
	if err != nil {
		reject(rejection{http.StatusUnauthorized, err.Error(), OutcomeInvalidSignature})
		return
	}

	// 5. The envelope. Datagrid signed this body, so it is never thrown
	// away: what cannot be routed by its event type is quarantined.
	msg := publish.Message{WebhookID: secret.WebhookID, Body: body}
	env, err := parseEnvelope(body)
	if err != nil {
		msg.ID, msg.Quarantine = env.ID, err.Error()
		if msg.ID == "" {
			sum := sha256.Sum256(body)
			msg.ID = "sha256:" + hex.EncodeToString(sum[:])
		}
	} else {
		eventType = env.EventType
		msg.ID, msg.Type, msg.Time = env.ID, env.EventType, env.Time
	}

	// 6. Publish and wait for the bus to confirm (the publisher bounds
	// the wait).
	res, err := h.cfg.Publisher.Publish(r.Context(), msg)
	switch {
	case errors.Is(err, publish.ErrTooLarge): // retrying cannot cure it
		reject(rejection{http.StatusRequestEntityTooLarge, "body larger than the event bus accepts", OutcomeTooLarge},
			zap.String("event_id", msg.ID), zap.Error(err))
		return
	case err != nil:
		reject(rejection{http.StatusServiceUnavailable, "event bus did not confirm the message, retry later", OutcomeUnavailable},
			zap.String("event_id", msg.ID), zap.String("event_type", eventType), zap.Error(err))
		return
	}

	// 7. Answer: the event is stored (or, in core mode, sent).
	answer := h.answers[0]
	switch {
	case msg.Quarantine != "":
		outcome, answer = OutcomeQuarantined, h.answers[2]
		h.cfg.Log.Warn("signed delivery quarantined", zap.String("reason", msg.Quarantine),
			zap.String("nats_msg_id", msg.ID), zap.Uint64("seq", res.Sequence), zap.Bool("duplicate", res.Duplicate))
	case res.Duplicate:
		outcome, answer = OutcomeDuplicate, h.answers[1]
	default:
		m.LastPublished.SetToCurrentTime()
	}
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, answer)
	if ce := h.cfg.Log.Check(zap.DebugLevel, "delivery relayed"); ce != nil {
		ce.Write(zap.String("event_id", msg.ID), zap.String("event_type", eventType),
			zap.Bool("duplicate", res.Duplicate), zap.Uint64("seq", res.Sequence))
	}
}

// The answers of a relayed delivery, ready-made for the hot path: new,
// duplicate, quarantined.
var (
	answersStored = [3]string{
		`{"status":"stored"}` + "\n", `{"status":"duplicate"}` + "\n", `{"status":"quarantined"}` + "\n",
	}
	answersPublished = [3]string{
		`{"status":"published"}` + "\n", `{"status":"published"}` + "\n", `{"status":"quarantined"}` + "\n",
	}
)

// refuse answers a refused delivery and logs it: at info when it is the
// sender's problem, at warn when it is ours (5xx: Datagrid retries, but
// someone should look).
func (h *handler) refuse(w http.ResponseWriter, r *http.Request, rj rejection, fields ...zap.Field) {
	switch rj.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", RetryAfterSeconds)
	}
	writeJSON(w, rj.status, map[string]string{"error": rj.reason})
	level := zap.InfoLevel
	if rj.status >= 500 {
		level = zap.WarnLevel
	}
	if ce := h.cfg.Log.Check(level, "delivery refused"); ce != nil {
		ce.Write(append(fields,
			zap.Int("status", rj.status), zap.String("reason", rj.reason),
			zap.String("outcome", string(rj.outcome)), zap.String("remote", r.RemoteAddr))...)
	}
}

// Response header values, shared: net/http only reads them.
var (
	contentTypeJSON = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.Header()["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
