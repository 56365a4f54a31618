package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/sample"
)

// sender plays Datagrid's delivery side: once a webhook is registered for
// the demo's public URL, it sends signed sample deliveries of every event
// type through it, now and then delivers an event again (as Datagrid's
// at-least-once retries do), and retries refused deliveries later.
type sender struct {
	api      *datagridtest.Server
	url      string
	readyz   string // the relay's /readyz: sending starts once it answers 200
	out      *printer
	interval time.Duration
	forge    bool
}

// retryEvery is how often, in new events, the last one is delivered again.
const retryEvery = 3

type delivery struct {
	id   string
	body []byte
}

func (s *sender) run(ctx context.Context) {
	webhookID := s.awaitRegistration(ctx)
	if webhookID == "" {
		return
	}
	s.out.line(fmt.Sprintf("the relay registered webhook %s at the simulator; sending deliveries", webhookID))
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	var (
		pending []delivery // refused: Datagrid retries them, first
		last    *delivery  // the last accepted new event, to deliver once more
		seq     int
	)
	for {
		var d delivery
		again := false
		switch {
		case len(pending) > 0:
			d, pending = pending[0], pending[1:]
		case last != nil && seq%retryEvery == 0:
			d, last, again = *last, nil, true
		default:
			seq++
			known := event.Known()
			eventType := known[(seq-1)%len(known)]
			id := fmt.Sprintf("evt_demo_%04d", seq)
			d = delivery{id: id, body: sample.Delivery(eventType, id, seq, time.Now())}
		}
		switch accepted := s.deliver(ctx, webhookID, d); {
		case !accepted && ctx.Err() == nil:
			pending = append(pending, d)
		case accepted && !again:
			last = &d
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// awaitRegistration waits for the relay's webhook to appear at the
// simulator, enabled, and for the relay to be ready (the webhook exists a
// moment before the relay has stored and loaded its secret), and returns
// its id ("" when ctx ended).
func (s *sender) awaitRegistration(ctx context.Context) string {
	for {
		for _, wh := range s.api.Webhooks() {
			if wh.URL == publicURL && wh.Enabled && s.relayReady(ctx) {
				return wh.ID
			}
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// relayReady reports whether the relay's /readyz answers 200.
func (s *sender) relayReady(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.readyz, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// deliver sends d signed like Datagrid and reports whether it was accepted.
func (s *sender) deliver(ctx context.Context, webhookID string, d delivery) bool {
	secret := s.api.Secret(webhookID)
	if s.forge {
		secret = "whsec_forged_by_the_demo" //nolint:gosec // G101: a deliberately wrong secret
	}
	// A delivery is not cut off when the demo stops: it is answered, as
	// the relay's graceful shutdown promises, within the relay's timeouts.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	status, answer, err := sample.Send(sendCtx, s.url, secret, d.body, time.Now())
	switch {
	case ctx.Err() != nil:
		return false
	case err != nil:
		s.out.line(fmt.Sprintf("✗ %s not delivered: %v; Datagrid would retry", d.id, err))
		return false
	case status/100 == 2 && strings.Contains(answer, "duplicate"):
		s.out.line(fmt.Sprintf("↺ %s delivered again by Datagrid: duplicate suppressed, not published twice", d.id))
		return true
	case status/100 == 2:
		return true
	default:
		var e struct{ Error string }
		_ = json.Unmarshal([]byte(answer), &e)
		s.out.line(fmt.Sprintf("✗ %s refused by the relay: %d %s; Datagrid would retry", d.id, status, e.Error))
		return false
	}
}

// summarize makes the one-line summary of a delivery body.
func summarize(body []byte) string {
	var env struct {
		EventType string `json:"event_type"`
		Data      struct {
			ID            string         `json:"id"`
			Status        string         `json:"status"`
			RequestCounts map[string]int `json:"request_counts"`
			Error         *struct {
				Title string `json:"title"`
			} `json:"error"`
			KnowledgeID string         `json:"knowledge_id"`
			RowCounts   map[string]int `json:"row_counts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Sprintf("(%d bytes)", len(body))
	}
	d := env.Data
	switch {
	case d.KnowledgeID != "":
		return fmt.Sprintf("knowledge %s %s: %d tables, %d rows", d.KnowledgeID, d.Status, d.RowCounts["tables"], d.RowCounts["rows"])
	case d.ID != "":
		c := d.RequestCounts
		s := fmt.Sprintf("batch %s %s: %d succeeded, %d errored", d.ID, d.Status, c["succeeded"], c["errored"])
		if c["expired"] > 0 {
			s += fmt.Sprintf(", %d expired", c["expired"])
		}
		if c["canceled"] > 0 {
			s += fmt.Sprintf(", %d canceled", c["canceled"])
		}
		if d.Error != nil {
			s += " (" + d.Error.Title + ")"
		}
		return s
	}
	return env.EventType
}
