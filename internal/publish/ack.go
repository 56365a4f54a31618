package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
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
	send   func(*nats.Msg) error // nc.PublishMsg
	stream string                // the stream expected to answer, for scanAck
	prefix string                // replies go to prefix + token; the subscription (as long as the connection) is prefix + "*"

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*waiter // token -> the publish waiting for its ack

	// Publishes waiting to be written, by the one of them that leads (see
	// write); writing is held while a leader writes the ones it took.
	qmu          sync.Mutex
	queue, spare []queued
	leading      bool
	writing      sync.Mutex

	waiters sync.Pool
}

// waiter is one Publish waiting for its ack.
type waiter struct {
	ack   chan answer // capacity 1: the one answer to the current token
	timer *time.Timer // the publish timeout
}

// answer is an ack, or why none will come.
type answer struct {
	m   *nats.Msg
	err error
}

// queued is a publish waiting to be written.
type queued struct {
	msg   *nats.Msg
	w     *waiter
	token uint64
}

// The no-responders retry of jetstream.PublishMsg (its defaults): a stream
// without a leader for a moment, during an election, answers no one.
const (
	noResponderRetries = 2
	noResponderWait    = 250 * time.Millisecond
)

func newAcks(nc *nats.Conn, stream string) (*acks, error) {
	a := &acks{nc: nc, send: nc.PublishMsg, stream: stream, prefix: nc.NewRespInbox() + ".", pending: map[uint64]*waiter{}}
	a.waiters.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return &waiter{ack: make(chan answer, 1), timer: t}
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
		w.ack <- answer{m: m} // never blocks: one token, one answer, an empty buffer of one
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
		ack, err := readAck(reply.Data, a.stream)
		if err == nil && ack.Stream != a.stream {
			// The expected-stream header makes JetStream refuse to store
			// anywhere else; an answer naming another stream did not come
			// from it.
			return pubAck{}, fmt.Errorf("%w: answer from stream %q, not %q", errForeignAck, ack.Stream, a.stream)
		}
		return ack, err
	}
}

// errForeignAck is an answer to a publish that does not come from the
// expected stream: nothing says the message is stored.
var errForeignAck = errors.New("not an ack of the expected stream")

// roundTrip publishes msg with a fresh reply token and waits for its answer.
func (a *acks) roundTrip(ctx context.Context, msg *nats.Msg, w *waiter) (*nats.Msg, error) {
	a.mu.Lock()
	a.next++
	token := a.next
	a.pending[token] = w
	a.mu.Unlock()
	msg.Reply = a.prefix + strconv.FormatUint(token, 36)
	a.write(queued{msg, w, token})
	var err error
	select {
	case ans := <-w.ack:
		return ans.m, ans.err
	case <-w.timer.C:
		err = nats.ErrTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.unqueue(msg)
	a.mu.Lock()
	_, waiting := a.pending[token]
	delete(a.pending, token)
	a.mu.Unlock()
	if !waiting { // deliver took it and is sending: empty the buffer before w is reused
		<-w.ack
	}
	return nil, err
}

// write has q written. Publishes in flight at once are written together,
// by one of them, the leader: nats.go flushes once per batch instead of
// once per message, which saves a write system call and a goroutine
// switch in the relay and a read in nats-server per message. The leader
// first yields, so that deliveries ready to run can join its batch. It
// writes at most leaderBatches batches: if others keep queueing after
// that, a goroutine with no delivery of its own to answer writes the
// rest, so no delivery waits on everyone else's.
func (a *acks) write(q queued) {
	a.qmu.Lock()
	a.queue = append(a.queue, q)
	lead := !a.leading
	a.leading = true
	a.qmu.Unlock()
	if !lead {
		return
	}
	runtime.Gosched()
	for range leaderBatches {
		if !a.writeBatch() {
			return
		}
	}
	go a.drain()
}

// leaderBatches bounds what the leader writes for others.
const leaderBatches = 4

// drain writes batches until none is queued.
func (a *acks) drain() {
	for more := true; more; {
		more = a.writeBatch()
	}
}

// writeBatch writes everything queued and reports true, or, when nothing
// is queued, ends the lead and reports false.
func (a *acks) writeBatch() bool {
	a.writing.Lock()
	defer a.writing.Unlock()
	a.qmu.Lock()
	batch := a.queue
	if len(batch) == 0 {
		a.leading = false
		a.qmu.Unlock()
		return false
	}
	a.queue = a.spare[:0]
	a.qmu.Unlock()
	for _, q := range batch {
		if err := a.send(q.msg); err != nil {
			a.fail(q, err)
		}
	}
	clear(batch)
	a.qmu.Lock()
	a.spare = batch[:0]
	a.qmu.Unlock()
	return true
}

// fail answers a publish that could not be written, unless it gave up.
func (a *acks) fail(q queued, err error) {
	a.mu.Lock()
	_, waiting := a.pending[q.token]
	delete(a.pending, q.token)
	a.mu.Unlock()
	if waiting {
		q.w.ack <- answer{err: err}
	}
}

// unqueue makes sure nothing will write msg any more, so its publish can
// give up and its message be reused: it takes msg off the queue, or waits
// until the leader that took it has written it.
func (a *acks) unqueue(msg *nats.Msg) {
	a.qmu.Lock()
	for i, q := range a.queue {
		if q.msg == msg {
			a.queue = slices.Delete(a.queue, i, i+1)
			a.qmu.Unlock()
			return
		}
	}
	a.qmu.Unlock()
	a.writing.Lock()
	defer a.writing.Unlock()
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
// anything unreadable or without a stream. Acks from the stream expected
// are read without allocating.
func readAck(data []byte, expected string) (pubAck, error) {
	if a, ok := scanAck(data, expected); ok {
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
func scanAck(data []byte, expected string) (pubAck, bool) {
	s := ackScanner{data: data, expected: expected}
	a, err := s.ack()
	return a, err == nil
}

type ackScanner struct {
	data     []byte
	i        int
	expected string // the usual stream name, returned without a copy
}

func (s *ackScanner) ack() (pubAck, error) {
	var a pubAck
	var seen uint8 // one bit per key read
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
		var k uint8 // the key's bit; 0 for a key not read here
		switch string(key) {
		case "stream":
			k = 1
			var v []byte
			v, err = s.str()
			if a.Stream = s.expected; string(v) != s.expected {
				a.Stream = string(v)
			}
		case "domain":
			k = 2
			_, err = s.str()
		case "seq":
			k = 4
			a.Sequence, err = s.uint()
		case "duplicate":
			k = 8
			a.Duplicate, err = s.bool()
		}
		if k == 0 || seen&k != 0 || err != nil {
			return a, errNotAck
		}
		seen |= k
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
