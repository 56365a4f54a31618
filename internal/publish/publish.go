// Package publish puts verified deliveries on NATS and owns the stream they
// are stored in.
//
// In jetstream mode a message is published to the stream that captures
// <prefix>.> and Publish returns only after JetStream acknowledged storing
// it; the event id travels as Nats-Msg-Id, so a redelivery inside the
// stream's duplicate window is stored once. The Publisher creates the stream
// when it is missing, adopts an existing one only if its settings keep that
// promise, and checks it again on every reconnect, every few seconds and
// whenever a publish finds no stream (Run). In core mode Publish returns once
// the server has received the message (a flush round trip): nothing is
// stored, so subscribers that are away miss it.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/metrics"
)

// Header names set on messages, besides jetstream.MsgIDHeader.
const (
	HeaderContentType = "Content-Type"
	HeaderWebhookID   = "Datagrid-Webhook-Id"
	// HeaderQuarantineReason says why a delivery was quarantined.
	HeaderQuarantineReason = "Datagrid-Quarantine-Reason"
	// CloudEvents binary-mode attributes (NATS protocol binding).
	HeaderCESpecVersion = "ce-specversion"
	HeaderCEID          = "ce-id"
	HeaderCEType        = "ce-type"
	HeaderCESource      = "ce-source"
	HeaderCETime        = "ce-time"
)

// QuarantineToken is the last subject token of quarantined deliveries:
// <prefix>._quarantine. No event type can take it (event types never start
// with '_').
const QuarantineToken = "_quarantine"

// HeaderRoom is the payload room kept free for the headers above: event ids,
// types and webhook ids are bounded well below it by the ingress checks.
const HeaderRoom = 4096

// DefaultCheckInterval is how often Run checks the stream when nothing else
// asks it to.
const DefaultCheckInterval = 5 * time.Second

// Message is one verified delivery.
type Message struct {
	ID        string    // event id: the idempotency key
	Type      string    // event type; the subject is <prefix>.<Type>
	Time      time.Time // event time from the envelope; zero when absent
	WebhookID string    // Datagrid webhook id; empty when unknown
	Body      []byte    // the delivery body, published byte for byte
	// Quarantine, when set, is why the delivery cannot go on its event-type
	// subject: it goes to <prefix>._quarantine with this reason, and Type
	// and Time are unused.
	Quarantine string
}

// Result tells what became of a published message.
type Result struct {
	// Duplicate is true when JetStream already held a message with this id
	// and stored nothing new.
	Duplicate bool
	// Sequence is the stream sequence of the stored message (0 in core mode).
	Sequence uint64
}

// ErrTooLarge wraps a publish the bus will never accept, however often it
// is retried: the message is over its size limits.
var ErrTooLarge = errors.New("message larger than the bus accepts")

// Config shapes the publisher and the stream it creates.
type Config struct {
	// JetStream selects acknowledged, stored publishing; false is core NATS.
	JetStream     bool
	SubjectPrefix string
	Stream        string
	Replicas      int
	MaxAge        time.Duration // 0 keeps messages forever
	DedupeWindow  time.Duration
	// Tolerance is the signature tolerance: an adopted stream's duplicate
	// window must cover it, or a replay inside it is stored twice.
	Tolerance time.Duration
	// MaxBodyBytes is the configured body limit; BodyLimit lowers it to
	// what the server and the stream accept.
	MaxBodyBytes  int64
	Source        string        // ce-source of every message
	CheckInterval time.Duration // DefaultCheckInterval when 0
	// Timeout bounds how long Publish waits for the bus to confirm a
	// message (DefaultTimeout when 0).
	Timeout time.Duration
}

// DefaultTimeout is Config.Timeout's default, RELAY_PUBLISH_TIMEOUT's.
const DefaultTimeout = 5 * time.Second

// Publisher publishes deliveries to NATS. It is safe for concurrent use.
// It does not own the connection: the caller drains it on shutdown, after
// the last Publish has returned.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	acks    *acks // jetstream mode's publishes
	cfg     Config
	metrics *metrics.Metrics
	log     *zap.Logger

	// What Run last found; read by Check and BodyLimit on every request.
	streamErr     atomic.Pointer[error] // nil pointer: the stream is fine
	streamMaxSize atomic.Int64          // the stream's max_msg_size, 0 when unlimited
	wake          chan struct{}

	subjects  sync.Map // event type -> subject
	subjectsN atomic.Int64
	lastTime  atomic.Pointer[formattedTime] // see ceTime
}

// New returns a Publisher on nc. It does no I/O: Run ensures the stream.
func New(nc *nats.Conn, cfg Config, m *metrics.Metrics, log *zap.Logger) (*Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	p := &Publisher{nc: nc, js: js, cfg: cfg, metrics: m, log: log, wake: make(chan struct{}, 1)}
	if cfg.JetStream {
		if p.acks, err = newAcks(nc, cfg.Stream); err != nil {
			return nil, err
		}
	}
	notYet := errNotChecked
	p.streamErr.Store(&notYet)
	m.BodyLimit.Set(float64(p.BodyLimit()))
	return p, nil
}

var errNotChecked = errors.New("not checked yet")

// Subjects is the subject filter that the stream must capture.
func (p *Publisher) Subjects() string { return p.cfg.SubjectPrefix + ".>" }

// Run keeps the stream until ctx ends: it ensures it at once, then on every
// reconnect, whenever a publish found no stream, and every CheckInterval.
// Between two checks it waits at least a floor that grows while checks
// fail, whatever wakes it, so nothing can make it spin. In core mode it only
// keeps the body limit up to date.
func (p *Publisher) Run(ctx context.Context) {
	reconnected := p.nc.StatusChanged(nats.CONNECTED)
	defer p.nc.RemoveStatusListener(reconnected)
	const minFloor, maxFloor = 250 * time.Millisecond, 5 * time.Second
	floor := minFloor
	for {
		err := p.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			floor = min(floor*2, maxFloor)
		} else {
			floor = minFloor
		}
		select { // the floor: no wake-up can bring the next check closer
		case <-ctx.Done():
			return
		case <-time.After(floor):
		}
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
		case <-p.wake:
		case <-time.After(p.cfg.CheckInterval - floor):
		}
	}
}

// check ensures the stream once and records the outcome for Check and
// BodyLimit, logging only changes.
func (p *Publisher) check(ctx context.Context) error {
	var err error
	var warning string
	if p.cfg.JetStream {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		warning, err = p.ensureStream(attempt)
		cancel()
	}
	if ctx.Err() != nil {
		return err
	}
	prev := p.streamErr.Load()
	switch {
	case err == nil && prev != nil:
		p.streamErr.Store(nil)
		if p.cfg.JetStream {
			p.log.Info("stream ready", zap.String("stream", p.cfg.Stream), zap.Int64("body_limit", p.BodyLimit()))
		}
		if warning != "" {
			p.log.Warn(warning, zap.String("stream", p.cfg.Stream))
		}
	case err != nil && (prev == nil || (*prev).Error() != err.Error()):
		p.streamErr.Store(&err)
		p.log.Warn("stream not ready; deliveries are answered 503 until it is", zap.String("stream", p.cfg.Stream), zap.Error(err))
	}
	p.metrics.BodyLimit.Set(float64(p.BodyLimit()))
	return err
}

// ensureStream creates the stream if it is missing and adopts it if present
// and fit (see adoptable). An existing stream is never modified. The
// warning, if any, is about an adopted stream that keeps the promise but
// less well than configured.
func (p *Publisher) ensureStream(ctx context.Context) (warning string, err error) {
	if !p.nc.IsConnected() {
		return "", errors.New("nats not connected")
	}
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = p.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        p.cfg.Stream,
			Description: "Datagrid webhook events, relayed by datagrid-relay",
			Subjects:    []string{p.Subjects()},
			Storage:     jetstream.FileStorage,
			Replicas:    p.cfg.Replicas,
			MaxAge:      p.cfg.MaxAge,
			Duplicates:  p.cfg.DedupeWindow,
			Discard:     jetstream.DiscardOld,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = p.js.Stream(ctx, p.cfg.Stream) // another replica was first
		}
		if err != nil {
			return "", fmt.Errorf("create stream %s: %w", p.cfg.Stream, err)
		}
		p.log.Info("stream created", zap.String("stream", p.cfg.Stream), zap.String("subjects", p.Subjects()))
	} else if err != nil {
		return "", fmt.Errorf("look up stream %s: %w", p.cfg.Stream, err)
	}
	c := s.CachedInfo().Config
	if problem := p.adoptable(c); problem != "" {
		return "", fmt.Errorf("stream %s cannot be adopted: %s", p.cfg.Stream, problem)
	}
	p.streamMaxSize.Store(max(int64(c.MaxMsgSize), 0))
	if c.Duplicates < p.cfg.DedupeWindow {
		warning = fmt.Sprintf("adopted stream has a duplicate window of %s, shorter than RELAY_DEDUPE_WINDOW=%s: a redelivery after it is stored again",
			c.Duplicates, p.cfg.DedupeWindow)
	}
	return warning, nil
}

// adoptable says why an existing stream would break "2xx means stored
// exactly once", or "" when it keeps the promise. A max_msg_size below the
// body limit is fine: BodyLimit lowers the limit to it.
func (p *Publisher) adoptable(c jetstream.StreamConfig) string {
	switch {
	case !captures(c.Subjects, p.Subjects()):
		return fmt.Sprintf("its subjects %v do not capture %s", c.Subjects, p.Subjects())
	case c.Retention == jetstream.InterestPolicy:
		return "interest retention keeps nothing while no consumer is interested; use limits or workqueue"
	case c.NoAck:
		return "acknowledgements are off (no_ack), so no publish can be confirmed"
	case c.MaxMsgsPerSubject > 0:
		return fmt.Sprintf("max_msgs_per_subject %d drops stored events of the same type", c.MaxMsgsPerSubject)
	case c.Duplicates < p.cfg.Tolerance:
		return fmt.Sprintf("its duplicate window %s is shorter than RELAY_SIGNATURE_TOLERANCE %s, so a replay inside the tolerance is stored twice", c.Duplicates, p.cfg.Tolerance)
	case c.Sealed:
		return "it is sealed"
	case c.Mirror != nil:
		return "it is a mirror, which takes no publishes"
	}
	return ""
}

// captures reports whether one of the stream subjects covers filter, for the
// filters the relay uses (<prefix>.>).
func captures(subjects []string, filter string) bool {
	for _, s := range subjects {
		if s == ">" || s == filter {
			return true
		}
		// "a.>" captures "a.b.>".
		if len(s) > 2 && s[len(s)-2:] == ".>" && len(filter) > len(s) && filter[:len(s)-1] == s[:len(s)-1] {
			return true
		}
	}
	return false
}

// Check reports why the publisher cannot publish now, or nil when it can:
// connected and, in jetstream mode, the stream present and fit as Run last
// found it. It does no I/O.
func (p *Publisher) Check() error {
	if !p.nc.IsConnected() {
		return errors.New("nats not connected")
	}
	if !p.cfg.JetStream {
		return nil
	}
	return p.StreamCheck()
}

// StreamCheck is the stream's part of Check: nil in core mode.
func (p *Publisher) StreamCheck() error {
	if !p.cfg.JetStream {
		return nil
	}
	if err := p.streamErr.Load(); err != nil {
		return *err
	}
	return nil
}

// BodyLimit is the largest delivery body the bus accepts now: the
// configured limit, lowered to the server's max_payload and the stream's
// max_msg_size, each less HeaderRoom, once they are known.
func (p *Publisher) BodyLimit() int64 {
	limit := p.cfg.MaxBodyBytes
	if mp := p.nc.MaxPayload() - HeaderRoom; mp > 0 && mp < limit {
		limit = mp
	}
	if ms := p.streamMaxSize.Load() - HeaderRoom; ms > 0 && ms < limit {
		limit = ms
	}
	return limit
}

// Publish puts m on its subject. It returns nil only once the message is
// stored by JetStream (jetstream mode) or received by the server (core
// mode), waiting at most Config.Timeout and no longer than ctx lasts. An
// error wrapping ErrTooLarge will never succeed; after any other
// error nothing can be promised: the caller answers 503 and Datagrid
// retries, which the duplicate window absorbs if the message was stored
// after all. m.Body is not kept after Publish returns.
func (p *Publisher) Publish(ctx context.Context, m Message) (Result, error) {
	o := outgoing.Get().(*outMsg)
	defer o.release()
	msg, h, v := &o.msg, o.msg.Header, &o.vals
	msg.Data = m.Body
	v[0] = m.ID
	h[jetstream.MsgIDHeader] = v[0:1:1]
	if p.cfg.JetStream {
		// Only our stream may acknowledge (the header jetstream's
		// WithExpectStream sets, without its per-call allocations).
		v[1] = p.cfg.Stream
		h[jetstream.ExpectedStreamHeader] = v[1:2:2]
	}
	if m.WebhookID != "" {
		v[2] = m.WebhookID
		h[HeaderWebhookID] = v[2:3:3]
	}
	if m.Quarantine != "" {
		msg.Subject = p.cfg.SubjectPrefix + "." + QuarantineToken
		v[3] = m.Quarantine
		h[HeaderQuarantineReason] = v[3:4:4]
	} else {
		msg.Subject = p.subject(m.Type)
		h[HeaderContentType] = valueJSON
		h[HeaderCESpecVersion] = valueSpec10
		h[HeaderCEID] = v[0:1:1]
		v[3] = m.Type
		h[HeaderCEType] = v[3:4:4]
		v[4] = p.cfg.Source
		h[HeaderCESource] = v[4:5:5]
		if !m.Time.IsZero() {
			v[5] = p.ceTime(m.Time)
			h[HeaderCETime] = v[5:6:6]
		}
	}

	start := time.Now()
	res, err := p.send(ctx, msg)
	p.metrics.PublishDuration.Observe(time.Since(start).Seconds())
	p.metrics.Publishes.Inc()
	if err != nil {
		p.metrics.PublishFailures.Inc()
		return Result{}, err
	}
	return res, nil
}

// ceTime is t as ce-time (RFC 3339, whole seconds, UTC). The last one is
// kept: deliveries that come in a burst mostly carry the same second.
func (p *Publisher) ceTime(t time.Time) string {
	sec := t.Unix()
	if last := p.lastTime.Load(); last != nil && last.sec == sec {
		return last.text
	}
	text := t.UTC().Format(time.RFC3339)
	p.lastTime.Store(&formattedTime{sec, text})
	return text
}

type formattedTime struct {
	sec  int64
	text string
}

// outMsg is a message being published, pooled with its header map and the
// backing array of its header values: nats.go copies a message into its
// write buffer before Publish returns, so nothing outlives the call.
type outMsg struct {
	msg  nats.Msg
	vals [6]string
}

var outgoing = sync.Pool{New: func() any { return &outMsg{msg: nats.Msg{Header: make(nats.Header, 10)}} }}

func (o *outMsg) release() {
	clear(o.msg.Header)
	o.msg.Data, o.msg.Reply, o.vals = nil, "", [6]string{}
	outgoing.Put(o)
}

// Header values that never change; nats.go only reads them.
var (
	valueJSON   = []string{"application/json"}
	valueSpec10 = []string{"1.0"}
)

// subject is <prefix>.<eventType>, built once per event type.
func (p *Publisher) subject(eventType string) string {
	if s, ok := p.subjects.Load(eventType); ok {
		return s.(string)
	}
	s := p.cfg.SubjectPrefix + "." + eventType
	if p.subjectsN.Add(1) <= maxCachedSubjects { // event types come from signed deliveries, but stay bounded anyway
		p.subjects.Store(eventType, s)
	}
	return s
}

// maxCachedSubjects bounds the subject cache.
const maxCachedSubjects = 256

func (p *Publisher) send(ctx context.Context, msg *nats.Msg) (Result, error) {
	if !p.cfg.JetStream {
		if err := p.nc.PublishMsg(msg); err != nil {
			return Result{}, classify(fmt.Errorf("publish: %w", err))
		}
		ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
		if err := p.nc.FlushWithContext(ctx); err != nil {
			return Result{}, fmt.Errorf("flush: %w", err)
		}
		return Result{}, nil
	}
	if err := p.StreamCheck(); err != nil {
		return Result{}, fmt.Errorf("stream %s not ready: %w", p.cfg.Stream, err)
	}
	ack, err := p.acks.publish(ctx, msg, p.cfg.Timeout)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) || otherStream(err) {
			p.Recheck() // deleted behind our back? Run finds out and recreates it, or says why not
		}
		return Result{}, classify(fmt.Errorf("publish to stream %s: %w", p.cfg.Stream, err))
	}
	return Result{Duplicate: ack.Duplicate, Sequence: ack.Sequence}, nil
}

// errStreamNotMatch is JetStream's answer when the subject is captured by
// a stream other than the expected one (ours was deleted and another took
// its subjects); nats.go has no constant for it.
const errStreamNotMatch jetstream.ErrorCode = 10060

// otherStream reports whether err says the subject went to another stream.
func otherStream(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errStreamNotMatch
}

// Recheck asks Run to check the stream now (within its floor).
func (p *Publisher) Recheck() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// classify marks the errors no retry can cure.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.Is(err, nats.ErrMaxPayload) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return err
}
