// Package publish puts verified deliveries on NATS.
//
// In jetstream mode a message is published to the stream that captures
// <prefix>.> and Publish returns only after JetStream acknowledged storing
// it; the event id travels as Nats-Msg-Id, so a redelivery inside the
// stream's duplicate window is stored once. In core mode Publish returns
// once the server has received the message (a flush round trip): nothing
// is stored, so subscribers that are away miss it.
package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/datagrid-relay/relay/internal/metrics"
)

// Header names set on every message, besides jetstream.MsgIDHeader.
const (
	HeaderContentType = "Content-Type"
	HeaderWebhookID   = "Datagrid-Webhook-Id"
	// CloudEvents binary-mode attributes (NATS protocol binding).
	HeaderCESpecVersion = "ce-specversion"
	HeaderCEID          = "ce-id"
	HeaderCEType        = "ce-type"
	HeaderCESource      = "ce-source"
	HeaderCETime        = "ce-time"
)

// HeaderRoom is the payload room kept free for the headers above: event ids,
// types and webhook ids are bounded well below it by the ingress checks.
const HeaderRoom = 4096

// Modes of publishing.
const (
	ModeJetStream = "jetstream"
	ModeCore      = "core"
)

// Message is one verified delivery.
type Message struct {
	ID        string    // event id: the idempotency key
	Type      string    // event type; the subject is <prefix>.<Type>
	Time      time.Time // event time from the envelope; zero when absent
	WebhookID string    // Datagrid webhook id; empty when unknown
	Body      []byte    // the delivery body, published byte for byte
}

// Result tells what became of a published message.
type Result struct {
	// Duplicate is true when JetStream already held a message with this id
	// and stored nothing new.
	Duplicate bool
	// Sequence is the stream sequence of the stored message (0 in core mode).
	Sequence uint64
}

// Config shapes the publisher and, in jetstream mode, the stream it creates.
type Config struct {
	Mode          string
	SubjectPrefix string
	Stream        string
	Replicas      int
	MaxAge        time.Duration // 0 keeps messages forever
	DedupeWindow  time.Duration
	Source        string // ce-source of every message
}

// ErrStreamMismatch means a stream of the configured name exists but does
// not capture <prefix>.>; the relay will not change it.
var ErrStreamMismatch = errors.New("stream does not capture the subjects")

// Publisher publishes deliveries to NATS. It is safe for concurrent use.
// It does not own the connection: the caller drains it on shutdown, after
// the last Publish has returned.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	metrics *metrics.Metrics
}

// New returns a Publisher on nc.
func New(nc *nats.Conn, cfg Config, m *metrics.Metrics) (*Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	return &Publisher{nc: nc, js: js, cfg: cfg, metrics: m}, nil
}

// Subjects is the subject filter that the stream must capture.
func (p *Publisher) Subjects() string { return p.cfg.SubjectPrefix + ".>" }

// EnsureStream creates the stream if it is missing and adopts it if present.
// An existing stream is never modified: if it does not capture the relay's
// subjects the error wraps ErrStreamMismatch; a duplicate window shorter than
// configured is reported through warn but accepted. In core mode it does
// nothing.
func (p *Publisher) EnsureStream(ctx context.Context, warn func(msg string)) error {
	if p.cfg.Mode != ModeJetStream {
		return nil
	}
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = p.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        p.cfg.Stream,
			Description: "Datagrid webhook events, relayed by datagrid-relay",
			Subjects:    []string{p.Subjects()},
			Storage:     jetstream.FileStorage,
			Replicas:    p.cfg.Replicas,
			MaxAge:      p.cfg.MaxAge,
			Duplicates:  p.cfg.DedupeWindow,
			Discard:     jetstream.DiscardOld,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", p.cfg.Stream, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("look up stream %s: %w", p.cfg.Stream, err)
	}
	info := s.CachedInfo()
	if !captures(info.Config.Subjects, p.Subjects()) {
		return fmt.Errorf("stream %s has subjects %v, want one capturing %s: %w",
			p.cfg.Stream, info.Config.Subjects, p.Subjects(), ErrStreamMismatch)
	}
	if info.Config.Duplicates < p.cfg.DedupeWindow && warn != nil {
		warn(fmt.Sprintf("stream %s has a duplicate window of %s, shorter than RELAY_DEDUPE_WINDOW=%s: redeliveries after it are stored again",
			p.cfg.Stream, info.Config.Duplicates, p.cfg.DedupeWindow))
	}
	return nil
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
// connected and, in jetstream mode, the stream present.
func (p *Publisher) Check(ctx context.Context) error {
	if !p.nc.IsConnected() {
		return errors.New("nats not connected")
	}
	if p.cfg.Mode != ModeJetStream {
		return nil
	}
	if _, err := p.js.Stream(ctx, p.cfg.Stream); err != nil {
		return fmt.Errorf("stream %s: %w", p.cfg.Stream, err)
	}
	return nil
}

// MaxPayload is the largest message the connected server accepts, or 0 while
// that is not known yet.
func (p *Publisher) MaxPayload() int64 { return p.nc.MaxPayload() }

// Publish puts m on <prefix>.<m.Type>. It returns nil only once the message is
// stored by JetStream (jetstream mode) or received by the server (core mode).
// On error nothing can be promised: the caller answers 503 and Datagrid
// retries, which the duplicate window absorbs if the message was stored
// after all.
func (p *Publisher) Publish(ctx context.Context, m Message) (Result, error) {
	msg := &nats.Msg{
		Subject: p.cfg.SubjectPrefix + "." + m.Type,
		Data:    m.Body,
		Header:  make(nats.Header, 9),
	}
	h := msg.Header
	h[jetstream.MsgIDHeader] = []string{m.ID}
	h[HeaderContentType] = []string{"application/json"}
	h[HeaderCESpecVersion] = []string{"1.0"}
	h[HeaderCEID] = []string{m.ID}
	h[HeaderCEType] = []string{m.Type}
	h[HeaderCESource] = []string{p.cfg.Source}
	if !m.Time.IsZero() {
		h[HeaderCETime] = []string{m.Time.UTC().Format(time.RFC3339)}
	}
	if m.WebhookID != "" {
		h[HeaderWebhookID] = []string{m.WebhookID}
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

func (p *Publisher) send(ctx context.Context, msg *nats.Msg) (Result, error) {
	if p.cfg.Mode != ModeJetStream {
		if err := p.nc.PublishMsg(msg); err != nil {
			return Result{}, fmt.Errorf("publish: %w", err)
		}
		if err := p.nc.FlushWithContext(ctx); err != nil {
			return Result{}, fmt.Errorf("flush: %w", err)
		}
		return Result{}, nil
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(p.cfg.Stream))
	if err != nil {
		return Result{}, fmt.Errorf("publish to stream %s: %w", p.cfg.Stream, err)
	}
	return Result{Duplicate: ack.Duplicate, Sequence: ack.Sequence}, nil
}
