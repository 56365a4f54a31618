package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CheckResult compares the ids answered 2xx with what the stream holds.
type CheckResult struct {
	Acked      int      // distinct ids answered 2xx
	Stored     int      // messages read from the stream
	Lost       []string // answered 2xx, not in the stream
	Duplicated []string // in the stream more than once
	// Unacked counts ids in the stream never answered 2xx: allowed (a 503
	// after the store, retried by Datagrid) but worth seeing.
	Unacked int
}

// OK is true when nothing was lost and nothing duplicated.
func (c CheckResult) OK() bool { return len(c.Lost) == 0 && len(c.Duplicated) == 0 }

// Check compares acked ids with stored, the count of stream messages per
// Nats-Msg-Id: every acked id must be stored exactly once.
func Check(acked []string, stored map[string]int) CheckResult {
	res := CheckResult{}
	seen := make(map[string]bool, len(acked))
	for _, id := range acked {
		if seen[id] {
			continue
		}
		seen[id] = true
		res.Acked++
		if stored[id] == 0 {
			res.Lost = append(res.Lost, id)
		}
	}
	for id, n := range stored {
		res.Stored += n
		if n > 1 {
			res.Duplicated = append(res.Duplicated, id)
		}
		if !seen[id] {
			res.Unacked++
		}
	}
	slices.Sort(res.Lost)
	slices.Sort(res.Duplicated)
	return res
}

// LastSeq is the last sequence of stream, 0 when it is empty or missing.
func LastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// ReadIDs counts the messages of stream from sequence from on, by
// Nats-Msg-Id, reading headers only with an ordered consumer. It reads up
// to the last sequence when it started and gives up when ctx ends.
func ReadIDs(ctx context.Context, js jetstream.JetStream, stream string, from uint64) (map[string]int, error) {
	ids := map[string]int{}
	last, err := LastSeq(ctx, js, stream)
	if err != nil || last < from {
		return ids, err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   max(from, 1),
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer on %s: %w", stream, err)
	}
	read := uint64(0)
	for done := false; !done; {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %s up to %d: %w", stream, last, ctx.Err())
		}
		// Ask for no more than what is left, so the fetch ends with the last
		// message instead of waiting out its max wait.
		left := (last - max(from, 1) + 1) - min(read, last-max(from, 1)+1)
		batch, err := c.Fetch(int(min(max(left, 1), 4096)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", stream, err)
		}
		for m := range batch.Messages() { // drained in full: the fetch then has ended
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			read++
			if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("fetch from %s: %w", stream, err)
		}
	}
	return ids, nil
}
