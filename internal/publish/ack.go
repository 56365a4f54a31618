package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// acks does what jetstream.PublishMsg does for one message (a request to
// the stream, the ack awaited, a no-responders answer retried twice 250 ms
// apart) at a lower cost per message, which the profiles asked for
// (docs/benchmarks.md): one reply subscription for the life of the
// publisher, pooled waiters each with its own timer instead of a context
// per publish, and the ack read without encoding/json in its usual shape.
// The answers, errors included, are jetstream.PublishMsg's.
type acks struct {
	nc     *nats.Conn
	prefix string // replies go to prefix + token; the subscription (as long as the connection) is prefix + "*"

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*waiter // token -> the publish waiting for its ack

	waiters sync.Pool
}

// waiter is one Publish waiting for its ack.
type waiter struct {
	ack   chan *nats.Msg // capacity 1: the one answer to the current token
	timer *time.Timer    // the publish timeout
}

// The no-responders retry of jetstream.PublishMsg (its defaults): a stream
// without a leader for a moment, during an election, answers no one.
const (
	noResponderRetries = 2
	noResponderWait    = 250 * time.Millisecond
)

func newAcks(nc *nats.Conn) (*acks, error) {
	a := &acks{nc: nc, prefix: nc.NewRespInbox() + ".", pending: map[uint64]*waiter{}}
	a.waiters.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return &waiter{ack: make(chan *nats.Msg, 1), timer: t}
	}
	sub, err := nc.Subscribe(a.prefix+"*", a.deliver)
	if err != nil {
		return nil, fmt.Errorf("subscribe to acks: %w", err)
	}
	// Acks are small, one per publish in flight; never drop one for a
	// pending limit (its publish would wait for its timeout and answer 503).
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("ack subscription limits: %w", err)
	}
	return a, nil
}

// deliver hands an ack to the publish waiting for it. An ack nobody waits
// for any more (its publish timed out) is dropped: tokens are never reused.
func (a *acks) deliver(m *nats.Msg) {
	if len(m.Subject) <= len(a.prefix) {
		return
	}
	token, err := strconv.ParseUint(m.Subject[len(a.prefix):], 36, 64)
	if err != nil {
		return
	}
	a.mu.Lock()
	w := a.pending[token]
	delete(a.pending, token)
	a.mu.Unlock()
	if w != nil {
		w.ack <- m // never blocks: one token, one answer, an empty buffer of one
	}
}

// publish sends msg (its Reply is overwritten) and waits for the ack until
// timeout or ctx ends; it returns the ack's body parsed.
func (a *acks) publish(ctx context.Context, msg *nats.Msg, timeout time.Duration) (pubAck, error) {
	w := a.waiters.Get().(*waiter)
	defer a.waiters.Put(w)
	w.timer.Reset(timeout)
	defer w.timer.Stop()
	for attempt := 0; ; attempt++ {
		reply, err := a.roundTrip(ctx, msg, w)
		if err != nil {
			return pubAck{}, err
		}
		if len(reply.Data) == 0 && reply.Header.Get("Status") == "503" { // no responders
			if attempt == noResponderRetries {
				return pubAck{}, jetstream.ErrNoStreamResponse
			}
			if err := a.pause(ctx, w); err != nil {
				return pubAck{}, err
			}
			continue
		}
		return readAck(reply.Data)
	}
}

// roundTrip publishes msg with a fresh reply token and waits for its answer.
func (a *acks) roundTrip(ctx context.Context, msg *nats.Msg, w *waiter) (*nats.Msg, error) {
	a.mu.Lock()
	a.next++
	token := a.next
	a.pending[token] = w
	a.mu.Unlock()
	msg.Reply = a.prefix + strconv.FormatUint(token, 36)
	err := a.nc.PublishMsg(msg)
	if err == nil {
		select {
		case m := <-w.ack:
			return m, nil
		case <-w.timer.C:
			err = nats.ErrTimeout
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	a.mu.Lock()
	_, waiting := a.pending[token]
	delete(a.pending, token)
	a.mu.Unlock()
	if !waiting { // deliver took it and is sending: empty the buffer before w is reused
		<-w.ack
	}
	return nil, err
}

// pause waits between two no-responder attempts, within the timeout.
func (a *acks) pause(ctx context.Context, w *waiter) error {
	t := time.NewTimer(noResponderWait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-w.timer.C:
		return nats.ErrTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pubAck is what the relay needs of an ack.
type pubAck struct {
	Stream    string
	Sequence  uint64
	Duplicate bool
}

// ackJSON is the ack as jetstream.PublishMsg decodes it.
type ackJSON struct {
	Error     *jetstream.APIError `json:"error"`
	Stream    string              `json:"stream"`
	Sequence  uint64              `json:"seq"`
	Duplicate bool                `json:"duplicate"`
}

// readAck reads an ack the way jetstream.PublishMsg does, with the same
// errors: an API error wrapped as "nats: ...", jetstream.ErrInvalidJSAck for
// anything unreadable or without a stream.
func readAck(data []byte) (pubAck, error) {
	if a, ok := scanAck(data); ok {
		return a, nil
	}
	var v ackJSON
	if err := json.Unmarshal(data, &v); err != nil {
		return pubAck{}, jetstream.ErrInvalidJSAck
	}
	if v.Error != nil {
		return pubAck{}, fmt.Errorf("nats: %w", v.Error)
	}
	if v.Stream == "" {
		return pubAck{}, jetstream.ErrInvalidJSAck
	}
	return pubAck{Stream: v.Stream, Sequence: v.Sequence, Duplicate: v.Duplicate}, nil
}

// errNotAck is scanAck's "not in the usual shape": readAck then asks
// encoding/json.
var errNotAck = errors.New("not a plain ack")

// scanAck reads a successful ack in the shape nats-server writes it, a flat
// object of "stream", "domain", "seq" and "duplicate" with plain ASCII
// strings, e.g. {"stream":"DATAGRID", "seq":42,"duplicate": true}. It
// answers ok only when encoding/json would read the same; anything else
// (an error, escapes, other or repeated keys) is not ok (FuzzScanAck holds
// it to that).
func scanAck(data []byte) (pubAck, bool) {
	s := ackScanner{data: data}
	a, err := s.ack()
	return a, err == nil
}

type ackScanner struct {
	data []byte
	i    int
}

func (s *ackScanner) ack() (pubAck, error) {
	var a pubAck
	var seen [4]bool // stream, domain, seq, duplicate
	if err := s.expect('{'); err != nil {
		return a, err
	}
	for {
		key, err := s.str()
		if err != nil {
			return a, err
		}
		if err := s.expect(':'); err != nil {
			return a, err
		}
		k := -1
		switch string(key) {
		case "stream":
			k = 0
			var v []byte
			v, err = s.str()
			a.Stream = string(v)
		case "domain":
			k = 1
			_, err = s.str()
		case "seq":
			k = 2
			a.Sequence, err = s.uint()
		case "duplicate":
			k = 3
			a.Duplicate, err = s.bool()
		}
		if k < 0 || seen[k] || err != nil {
			return a, errNotAck
		}
		seen[k] = true
		s.space()
		if s.i < len(s.data) && s.data[s.i] == ',' {
			s.i++
			continue
		}
		if err := s.expect('}'); err != nil {
			return a, err
		}
		s.space()
		if s.i != len(s.data) || a.Stream == "" {
			return a, errNotAck
		}
		return a, nil
	}
}

func (s *ackScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *ackScanner) expect(c byte) error {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return nil
	}
	return errNotAck
}

// str reads a string of printable ASCII without escapes.
func (s *ackScanner) str() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.i
	for ; s.i < len(s.data); s.i++ {
		switch c := s.data[s.i]; {
		case c == '"':
			s.i++
			return s.data[start : s.i-1], nil
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, errNotAck
		}
	}
	return nil, errNotAck
}

// uint reads an unsigned decimal integer that fits in 64 bits.
func (s *ackScanner) uint() (uint64, error) {
	s.space()
	start := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	digits := s.data[start:s.i]
	if len(digits) == 0 || len(digits) > 19 || (len(digits) > 1 && digits[0] == '0') {
		return 0, errNotAck // 19 digits always fit; longer ones go to encoding/json
	}
	var n uint64
	for _, d := range digits {
		n = n*10 + uint64(d-'0')
	}
	return n, nil
}

func (s *ackScanner) bool() (bool, error) {
	s.space()
	rest := s.data[s.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		s.i += 4
		return true, nil
	case len(rest) >= 5 && string(rest[:5]) == "false":
		s.i += 5
		return false, nil
	}
	return false, errNotAck
}
