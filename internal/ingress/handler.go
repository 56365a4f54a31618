// Package ingress receives Datagrid's webhook deliveries: it verifies the
// signature, checks the envelope and hands the delivery to a publisher,
// answering 2xx only once the publisher has stored it.
package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/publish"
)

// Publisher stores a delivery on the bus.
type Publisher interface {
	// Publish returns nil only once the message is stored (or, in core mode,
	// received by the server); it gives up when ctx ends. Safe for
	// concurrent use.
	Publish(ctx context.Context, m publish.Message) (publish.Result, error)
	// MaxPayload is the largest message the bus accepts now, 0 if unknown.
	MaxPayload() int64
}

// Keys are the signing secrets accepted at one moment.
type Keys struct {
	Secrets [][]byte
	// WebhookIDs, when set, name the Datagrid webhook of each secret, in the
	// same order; a delivery is labelled with the webhook whose secret
	// verified it.
	WebhookIDs []string
}

// webhookID is the webhook of secret i, or "" when unknown.
func (k Keys) webhookID(i int) string {
	if i >= 0 && i < len(k.WebhookIDs) {
		return k.WebhookIDs[i]
	}
	return ""
}

// Keyring hands out the signing secrets accepted right now. Keys is called
// once per delivery and must be cheap and safe for concurrent use.
type Keyring interface {
	Keys() Keys
}

// StaticKeys is a Keyring that never changes, for secrets given by hand.
type StaticKeys Keys

// Keys returns k.
func (k StaticKeys) Keys() Keys { return Keys(k) }

// Config holds the handler's dependencies and limits.
type Config struct {
	Keys           Keyring
	Publisher      Publisher
	Metrics        *metrics.Metrics
	Log            *zap.Logger
	Tolerance      time.Duration
	MaxBodyBytes   int64
	PublishTimeout time.Duration
	Now            func() time.Time // defaults to time.Now
}

// MaxIDLen bounds an event id, which travels in message headers.
const MaxIDLen = 256

// RetryAfterSeconds is the Retry-After of every 503.
const RetryAfterSeconds = "5"

// NewHandler returns the delivery handler. It reads the request top to
// bottom: method, bounded body, signature, envelope, publish, answer.
func NewHandler(cfg Config) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &handler{cfg: cfg}
}

type handler struct {
	cfg Config
}

// rejection is a refused delivery: its status, the short reason sent back
// and the outcome counted.
type rejection struct {
	status  int
	reason  string
	outcome metrics.Outcome
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := h.cfg.Metrics
	m.InFlight.Inc()
	defer m.InFlight.Dec()

	eventType, outcome := "", metrics.OutcomePublished
	defer func() { m.Delivery(eventType, outcome, time.Since(start).Seconds()) }()
	reject := func(rj rejection, fields ...zap.Field) {
		outcome = rj.outcome
		if rj.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		if rj.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", RetryAfterSeconds)
		}
		writeJSON(w, rj.status, map[string]string{"error": rj.reason})
		level := zap.InfoLevel // the sender's problem
		if rj.status >= 500 {
			level = zap.WarnLevel // ours: Datagrid will retry, but someone should look
		}
		h.cfg.Log.Log(level, "delivery refused", append(fields,
			zap.Int("status", rj.status), zap.String("reason", rj.reason),
			zap.String("outcome", string(rj.outcome)), zap.String("remote", r.RemoteAddr))...)
	}

	// 1. Method.
	if r.Method != http.MethodPost {
		reject(rejection{http.StatusMethodNotAllowed, "method not allowed, use POST", metrics.OutcomeMethodNotAllowed})
		return
	}

	// 2. Body, bounded by the smaller of our limit and what NATS accepts.
	limit := h.bodyLimit()
	body, err := readBody(r.Body, r.ContentLength, limit)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			reject(rejection{http.StatusRequestEntityTooLarge, "body larger than " + strconv.FormatInt(limit, 10) + " bytes", metrics.OutcomeTooLarge})
		} else {
			reject(rejection{http.StatusBadRequest, "could not read body", metrics.OutcomeMalformed}, zap.Error(err))
		}
		return
	}

	// 3. Signature.
	keys := h.cfg.Keys.Keys()
	if len(keys.Secrets) == 0 {
		reject(rejection{http.StatusServiceUnavailable, "no signing secret known yet", metrics.OutcomeUnavailable})
		return
	}
	which, err := VerifyWhich(r.Header.Get(SignatureHeader), body, keys.Secrets, h.cfg.Now(), h.cfg.Tolerance)
	if err != nil {
		o := metrics.OutcomeInvalidSignature
		if errors.Is(err, ErrStaleTimestamp) {
			o = metrics.OutcomeStaleTimestamp
		}
		reject(rejection{http.StatusUnauthorized, err.Error(), o})
		return
	}

	// 4. Envelope.
	env, err := parseEnvelope(body)
	eventType = env.EventType // counted even when refused below, if it was read
	if err != nil {
		reject(rejection{http.StatusBadRequest, err.Error(), metrics.OutcomeMalformed}, zap.String("event_id", env.ID))
		return
	}

	// 5. Publish and wait for the bus to confirm.
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	res, err := h.cfg.Publisher.Publish(ctx, publish.Message{
		ID: env.ID, Type: env.EventType, Time: env.Time, WebhookID: keys.webhookID(which), Body: body,
	})
	if err != nil {
		reject(rejection{http.StatusServiceUnavailable, "event bus did not confirm the message, retry later", metrics.OutcomeUnavailable},
			zap.String("event_id", env.ID), zap.String("event_type", env.EventType), zap.Error(err))
		return
	}

	// 6. Answer: the event is stored.
	answer := answerStored
	if res.Duplicate {
		outcome, answer = metrics.OutcomeDuplicate, answerDuplicate
	} else {
		m.LastPublished.SetToCurrentTime()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, answer)
	if ce := h.cfg.Log.Check(zap.DebugLevel, "delivery relayed"); ce != nil {
		ce.Write(zap.String("event_id", env.ID), zap.String("event_type", env.EventType),
			zap.Bool("duplicate", res.Duplicate), zap.Uint64("seq", res.Sequence))
	}
}

// The answers of a relayed delivery, ready-made for the hot path.
const (
	answerStored    = `{"status":"stored"}` + "\n"
	answerDuplicate = `{"status":"duplicate"}` + "\n"
)

// bodyLimit is the limit in force: RELAY_MAX_BODY_BYTES, lowered to what
// the NATS server accepts once that is known.
func (h *handler) bodyLimit() int64 {
	limit := h.cfg.MaxBodyBytes
	if mp := h.cfg.Publisher.MaxPayload() - publish.HeaderRoom; mp > 0 && mp < limit {
		limit = mp
	}
	h.cfg.Metrics.BodyLimit.Set(float64(limit))
	return limit
}

var errTooLarge = errors.New("body too large")

// readBody reads at most limit bytes, refusing early when the declared
// length already exceeds it.
func readBody(r io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return nil, errTooLarge
	}
	var buf bytes.Buffer
	if contentLength > 0 {
		buf.Grow(int(contentLength) + 1) // +1 so the EOF read needs no regrowth
	} else {
		buf.Grow(4096)
	}
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, err
	}
	if n > limit {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// envelope is the part of a delivery the relay needs; the rest travels
// untouched.
type envelope struct {
	ID        string
	EventType string
	Time      time.Time
}

var (
	errNotJSON       = errors.New("body is not a JSON object")
	errNoID          = errors.New("envelope has no id")
	errBadID         = errors.New("envelope id must be 1-256 visible ASCII characters")
	errNoEventType   = errors.New("envelope has no event_type")
	errBadEventType  = errors.New("envelope event_type must be [a-z0-9_] parts joined by dots")
	errBadFieldTypes = errors.New("envelope id and event_type must be strings")
)

// parseEnvelope reads id, event_type and timestamp. It returns what it could
// read even with an error, so refusals can be counted by event type.
func parseEnvelope(body []byte) (envelope, error) {
	var raw struct {
		ID        json.RawMessage `json:"id"`
		EventType json.RawMessage `json:"event_type"`
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return envelope{}, errNotJSON
	}
	var env envelope
	if len(raw.ID) == 0 || bytes.Equal(raw.ID, []byte("null")) {
		return env, errNoID
	}
	if len(raw.EventType) == 0 || bytes.Equal(raw.EventType, []byte("null")) {
		return env, errNoEventType
	}
	if json.Unmarshal(raw.ID, &env.ID) != nil || json.Unmarshal(raw.EventType, &env.EventType) != nil {
		return envelope{}, errBadFieldTypes
	}
	if !event.ValidType(env.EventType) {
		env.EventType = ""
		return env, errBadEventType
	}
	if !validID(env.ID) {
		env.ID = ""
		return env, errBadID
	}
	env.Time = parseTimestamp(raw.Timestamp)
	return env, nil
}

// validID accepts ids that are safe as header values: visible ASCII only,
// so no id can smuggle a line break into the message headers.
func validID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// maxUnixSeconds is the start of year 10000, past any real event time.
const maxUnixSeconds = 253402300800

// parseTimestamp reads Unix seconds; anything else yields the zero time and
// the message simply goes without ce-time.
func parseTimestamp(raw json.RawMessage) time.Time {
	if len(raw) == 0 {
		return time.Time{}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f <= 0 || f >= maxUnixSeconds {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
