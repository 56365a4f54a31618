package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/datagrid-relay/relay/internal/natstest"
)

// Acks as nats-server writes them, and near misses that scanAck must leave
// to encoding/json.
var ackSeeds = []string{
	`{"stream":"DATAGRID", "seq":1}`,
	`{"stream":"DATAGRID", "domain":"hub", "seq":18446744073709551615}`,
	`{"stream":"DATAGRID", "seq":42,"duplicate": true}`,
	`{"stream":"DATAGRID","seq":7,"duplicate":false}`,
	` { "seq" : 3 , "stream" : "S" } `,
	`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`,
	`{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"},"stream":""}`,
	`{"stream":"DATA\u0047RID","seq":1}`,
	`{"Stream":"DATAGRID","seq":1}`,
	`{"stream":"DATAGRID","stream":"OTHER","seq":1}`,
	`{"stream":"DATAGRID","seq":01}`,
	`{"stream":"DATAGRID","seq":1.0}`,
	`{"stream":"DATAGRID","seq":-1}`,
	`{"stream":"DATAGRID","seq":99999999999999999999}`,
	`{"stream":"DATAGRID","seq":1,"val":"x","batch":"b","count":2}`,
	`{"stream":"","seq":1}`,
	`{"stream":"DATAGRID","seq":1}x`,
	`{"stream":"DATAGRID","seq":1,}`,
	`{"stream":"DATAGRID","seq":1,"duplicate":truex}`,
	`{"stream":null,"seq":1}`,
	`{}`,
	``,
}

// FuzzScanAck holds scanAck to its promise: whenever it reads an ack,
// encoding/json reads the same, with no error.
func FuzzScanAck(f *testing.F) {
	for _, s := range ackSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := scanAck(data, "DATAGRID")
		if !ok {
			return
		}
		var want ackJSON
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("scanAck read %q, encoding/json refuses it: %v", data, err)
		}
		if want.Error != nil || want.Stream == "" || got != (pubAck{Stream: want.Stream, Sequence: want.Sequence, Duplicate: want.Duplicate}) {
			t.Fatalf("%q: scanAck %+v, encoding/json %+v", data, got, want)
		}
	})
}

func TestScanAckReadsServerAcks(t *testing.T) {
	for _, tt := range []struct {
		ack  string
		want pubAck
	}{
		{`{"stream":"DATAGRID", "seq":1}`, pubAck{Stream: "DATAGRID", Sequence: 1}},
		{`{"stream":"DATAGRID", "domain":"hub", "seq":9}`, pubAck{Stream: "DATAGRID", Sequence: 9}},
		{`{"stream":"DATAGRID", "seq":42,"duplicate": true}`, pubAck{Stream: "DATAGRID", Sequence: 42, Duplicate: true}},
		{`{"stream":"OTHER", "seq":3}`, pubAck{Stream: "OTHER", Sequence: 3}},
	} {
		got, ok := scanAck([]byte(tt.ack), "DATAGRID")
		if !ok || got != tt.want {
			t.Errorf("scanAck(%s) = %+v, %v; want %+v", tt.ack, got, ok, tt.want)
		}
	}
}

func TestReadAckErrorsAreJetStreams(t *testing.T) {
	_, err := readAck([]byte(`{"error":{"code":404,"err_code":10059,"description":"stream not found"}}`), "DATAGRID")
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream not found: got %v", err)
	}
	_, err = readAck([]byte(`{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}`), "DATAGRID")
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Errorf("too large: got %v", err)
	}
	for _, bad := range []string{`nonsense`, `{"seq":1}`, `{"stream":"","seq":1}`} {
		if _, err := readAck([]byte(bad), "DATAGRID"); !errors.Is(err, jetstream.ErrInvalidJSAck) {
			t.Errorf("readAck(%s): got %v, want ErrInvalidJSAck", bad, err)
		}
	}
	// Shapes scanAck leaves alone still read right.
	a, err := readAck([]byte(`{"stream":"DATA\u0047RID","seq":5,"duplicate":true,"val":"x"}`), "DATAGRID")
	if err != nil || a != (pubAck{Stream: "DATAGRID", Sequence: 5, Duplicate: true}) {
		t.Errorf("escaped ack: got %+v, %v", a, err)
	}
}

// TestAcksOnRealServer publishes through acks to a real JetStream: stored,
// duplicate, no stream (after the no-responders retries), too large.
func TestAcksOnRealServer(t *testing.T) {
	_, a := ackFixture(t, nil, &jetstream.StreamConfig{Duplicates: time.Hour, MaxMsgSize: 64})
	msg := func(subject, id string, data []byte) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = data
		return m
	}
	ctx := context.Background()
	first, err := a.publish(ctx, msg("s.a", "1", []byte("x")), 5*time.Second)
	if err != nil || first.Stream != "S" || first.Sequence != 1 || first.Duplicate {
		t.Fatalf("first: %+v, %v", first, err)
	}
	again, err := a.publish(ctx, msg("s.a", "1", []byte("x")), 5*time.Second)
	if err != nil || again.Sequence != 1 || !again.Duplicate {
		t.Fatalf("again: %+v, %v", again, err)
	}
	if _, err := a.publish(ctx, msg("s.a", "2", make([]byte, 100)), 5*time.Second); err == nil ||
		!errors.Is(classify(err), ErrTooLarge) {
		t.Fatalf("too large: got %v", err)
	}
	if _, err := a.publish(ctx, msg("nostream.a", "3", nil), 5*time.Second); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("no stream: got %v, want ErrNoStreamResponse", err)
	}
	if n := pending(a); n != 0 {
		t.Fatalf("%d publishes still pending", n)
	}
}

// TestAcksTimeoutAndLateAnswer: a publish whose answer comes too late times
// out, and the late answer reaches no one: the next publish, which reuses
// the pooled waiter, gets its own answer. An answer naming another stream
// is refused.
func TestAcksTimeoutAndLateAnswer(t *testing.T) {
	nc, a := ackFixture(t, nil, nil)
	requests, err := nc.SubscribeSync("slow.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.publish(context.Background(), nats.NewMsg("slow.1"), 50*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("got %v, want a timeout", err)
	}
	late, err := requests.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Respond([]byte(`{"stream":"S","seq":1}`)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ack, err := a.publish(context.Background(), nats.NewMsg("slow.2"), 5*time.Second)
		if err == nil && ack.Sequence != 2 {
			err = fmt.Errorf("got the answer of another publish: %+v", ack)
		}
		done <- err
	}()
	req, err := requests.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the late answer went out first
		t.Fatal(err)
	}
	if err := req.Respond([]byte(`{"stream":"S","seq":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// An answer that names another stream is no ack of ours.
	go func() {
		_, err := a.publish(context.Background(), nats.NewMsg("slow.4"), 5*time.Second)
		done <- err
	}()
	if req, err = requests.NextMsg(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := req.Respond([]byte(`{"stream":"OTHER","seq":3}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errForeignAck) {
		t.Fatalf("answer from another stream: got %v, want errForeignAck", err)
	}

	// A cancelled context ends the wait at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.publish(ctx, nats.NewMsg("slow.3"), time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v", err)
	}
	if n := pending(a); n != 0 {
		t.Fatalf("%d publishes still pending", n)
	}
}

// ackFixture starts a NATS server with opts (the defaults when nil),
// creates stream S on s.> with the settings given (none when nil) and
// returns a connection and acks expecting S.
func ackFixture(t *testing.T, opts *server.Options, stream *jetstream.StreamConfig) (*nats.Conn, *acks) {
	t.Helper()
	srv := natstest.Start(t, opts)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if stream != nil {
		stream.Name, stream.Subjects = "S", []string{"s.>"}
		if _, err := natstest.JetStream(t, srv.ClientURL()).CreateStream(context.Background(), *stream); err != nil {
			t.Fatal(err)
		}
	}
	a, err := newAcks(nc, "S")
	if err != nil {
		t.Fatal(err)
	}
	return nc, a
}

func pending(a *acks) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// TestAcksConcurrentBatches: publishes in flight together are written in
// batches by one of them; each still gets its own answer, a write error
// (over the server's max_payload) included.
func TestAcksConcurrentBatches(t *testing.T) {
	opts := natstest.Options(t.TempDir())
	opts.MaxPayload = 1024
	_, a := ackFixture(t, opts, &jetstream.StreamConfig{Duplicates: time.Hour})
	const n = 200
	type result struct {
		i   int
		ack pubAck
		err error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			m := nats.NewMsg("s.a")
			m.Header.Set(jetstream.MsgIDHeader, strconv.Itoa(i))
			m.Data = []byte("x")
			if i%10 == 0 {
				m.Data = make([]byte, 2048) // refused by nats.go before it is written
			}
			ack, err := a.publish(context.Background(), m, 10*time.Second)
			results <- result{i, ack, err}
		}()
	}
	seqs := map[uint64]bool{}
	for range n {
		r := <-results
		switch {
		case r.i%10 == 0:
			if !errors.Is(r.err, nats.ErrMaxPayload) {
				t.Errorf("publish %d: got %v, want ErrMaxPayload", r.i, r.err)
			}
		case r.err != nil:
			t.Errorf("publish %d: %v", r.i, r.err)
		case r.ack.Duplicate || seqs[r.ack.Sequence]:
			t.Errorf("publish %d: ack %+v repeats another's", r.i, r.ack)
		default:
			seqs[r.ack.Sequence] = true
		}
	}
	if len(seqs) != n-n/10 {
		t.Errorf("%d distinct sequences, want %d", len(seqs), n-n/10)
	}
	if n := pending(a); n != 0 {
		t.Fatalf("%d publishes still pending", n)
	}
}

// TestAcksGiveUpWhileQueued: a publish that gives up before a leader took
// it off the queue is taken off, so its message can be reused and is never
// written.
func TestAcksGiveUpWhileQueued(t *testing.T) {
	_, a := ackFixture(t, nil, nil)
	a.leading = true // a leader that has not taken the queue yet
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.publish(ctx, nats.NewMsg("s.a"), time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if len(a.queue) != 0 || pending(a) != 0 {
		t.Fatalf("after giving up: %d queued, %d pending", len(a.queue), pending(a))
	}
}

// TestAcksLeaderIsNotHeldByOthersQueueing: while others keep queueing
// publishes (here: one more for each one written), the one leading writes
// a few batches and returns to its own delivery; the rest are still
// written, by someone else.
func TestAcksLeaderIsNotHeldByOthersQueueing(t *testing.T) {
	_, a := ackFixture(t, nil, nil)
	const others = 10000
	var added, written atomic.Int64
	a.send = func(*nats.Msg) error {
		written.Add(1)
		if added.Add(1) <= others {
			a.qmu.Lock()
			a.queue = append(a.queue, queued{msg: nats.NewMsg("others")})
			a.qmu.Unlock()
		}
		return nil
	}
	a.write(queued{msg: nats.NewMsg("others")})
	if n := written.Load(); n >= others {
		t.Fatalf("the leader returned only after writing %d publishes, all the others'", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for written.Load() < others+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d publishes written: the rest were left queued", written.Load(), others+1)
		}
		time.Sleep(time.Millisecond)
	}
}
