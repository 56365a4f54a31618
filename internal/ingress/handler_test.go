package ingress_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/ingress"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/publish"
	"github.com/datagrid-relay/relay/internal/signature"
)

const (
	testSecret = "whsec_handler_test_0123456789"
	testStream = "DATAGRID"
	testPath   = "/webhooks/datagrid"
)

// fixture is the delivery handler on real HTTP over loopback, publishing
// to a real in-process JetStream server.
type fixture struct {
	t       testing.TB
	nats    *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	metrics *metrics.Metrics
	url     string
	handler http.Handler
	now     time.Time
}

type fixtureOpts struct {
	keys        signature.Keyring
	natsOpts    *server.Options
	maxBody     int64
	maxInflight int64
	core        bool
	noStream    bool // no stream is ensured: publishes find none
	stream      *jetstream.StreamConfig
	webhookID   string
	pubTimeout  time.Duration
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	srv := natstest.Start(t, o.natsOpts)
	nc, err := nats.Connect(srv.ClientURL(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{Version: "test"})
	if o.maxBody == 0 {
		o.maxBody = 1 << 20
	}
	if o.maxInflight == 0 {
		o.maxInflight = 32 << 20
	}
	if o.pubTimeout == 0 {
		o.pubTimeout = 2 * time.Second
	}
	pub, err := publish.New(nc, publish.Config{
		JetStream: !o.core, SubjectPrefix: "datagrid", Stream: testStream, Replicas: 1,
		MaxAge: time.Hour, DedupeWindow: time.Hour, Tolerance: 5 * time.Minute, MaxBodyBytes: o.maxBody,
		Source: "https://api.datagrid.com", CheckInterval: 100 * time.Millisecond, Timeout: o.pubTimeout,
	}, m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if o.stream != nil {
		js, _ := jetstream.New(nc)
		if _, err := js.CreateStream(context.Background(), *o.stream); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noStream {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); pub.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		deadline := time.Now().Add(10 * time.Second)
		for pub.StreamCheck() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("stream not ready: %v", pub.StreamCheck())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if o.keys == nil {
		o.keys = signature.Static{signature.NewSecret([]byte(testSecret), o.webhookID)}
	}
	f := &fixture{t: t, nats: srv, nc: nc, metrics: m, now: time.Now()}
	f.js, _ = jetstream.New(nc)
	h := ingress.NewHandler(ingress.Config{
		Keyring: o.keys, Publisher: pub, Metrics: m, Log: zap.NewNop(),
		Tolerance: 5 * time.Minute, MaxInflightBytes: o.maxInflight,
		JetStream: !o.core, Now: func() time.Time { return f.now },
	})
	f.handler = h
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	f.url = hs.URL + testPath
	return f
}

func envelope(id, eventType string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"event_type":%q,"timestamp":1775847600,"data":{"object":"batch_prediction","id":"bpred_abc123","status":"completed"}}`, id, eventType)
}

// post sends body signed with secret at the fixture's clock.
func (f *fixture) post(body []byte, secret string) *http.Response {
	f.t.Helper()
	return f.do(http.MethodPost, body, signature.Sign([]byte(secret), f.now.Unix(), body))
}

func (f *fixture) do(method string, body []byte, sig string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set(signature.Header, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (f *fixture) stored() uint64 { return storedIn(f.t, f.js) }

func storedIn(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (f *fixture) count(eventType string, o ingress.Outcome) float64 {
	return testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues(eventType, string(o)))
}

// expect checks status, the JSON body's field and value, and the headers.
func expect(t *testing.T, resp *http.Response, status int, field, value string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status: got %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type: got %q, want application/json", ct)
	}
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("body is not a JSON object: %v", err)
	}
	if len(body) != 1 || !strings.Contains(body[field], value) {
		t.Fatalf("body: got %v, want %s containing %q", body, field, value)
	}
}

func TestDeliveryStoredOnce(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := envelope("evt_1", "batch_prediction.completed")

	expect(t, f.post(body, testSecret), 200, "status", "stored")
	if got := f.stored(); got != 1 {
		t.Fatalf("stored: got %d, want 1", got)
	}
	if got := f.count("batch_prediction.completed", ingress.OutcomePublished); got != 1 {
		t.Fatalf("published metric: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.metrics.LastPublished); got == 0 {
		t.Fatal("last published timestamp not set")
	}
}

func TestDuplicateAnsweredWithoutSecondCopy(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := envelope("evt_dup", "batch_prediction.failed")
	expect(t, f.post(body, testSecret), 200, "status", "stored")

	// A retry: same event, signed again later.
	f.now = f.now.Add(time.Minute)
	expect(t, f.post(body, testSecret), 200, "status", "duplicate")
	// A replay of the very same request inside the tolerance.
	expect(t, f.post(body, testSecret), 200, "status", "duplicate")

	if got := f.stored(); got != 1 {
		t.Fatalf("stored: got %d, want 1", got)
	}
	if got := f.count("batch_prediction.failed", ingress.OutcomeDuplicate); got != 2 {
		t.Fatalf("duplicate metric: got %v, want 2", got)
	}
}

func TestUnauthorized(t *testing.T) {
	body := envelope("evt_401", "batch_prediction.completed")
	now := time.Now()
	valid := signature.Sign([]byte(testSecret), now.Unix(), body)
	tests := []struct {
		name      string
		signature string
		outcome   ingress.Outcome
		reason    string
	}{
		{"missing header", "", ingress.OutcomeInvalidSignature, "missing"},
		{"unparsable header", "garbage", ingress.OutcomeInvalidSignature, "malformed"},
		{"no v1", fmt.Sprintf("t=%d", now.Unix()), ingress.OutcomeInvalidSignature, "malformed"},
		{"wrong signature", fmt.Sprintf("t=%d,v1=%s", now.Unix(), strings.Repeat("ab", 32)), ingress.OutcomeInvalidSignature, "does not match"},
		{"unknown secret", signature.Sign([]byte("whsec_someone_else"), now.Unix(), body), ingress.OutcomeInvalidSignature, "does not match"},
		{"signature of other bytes", signature.Sign([]byte(testSecret), now.Unix(), append(body, ' ')), ingress.OutcomeInvalidSignature, "does not match"},
		{"t too old", signature.Sign([]byte(testSecret), now.Add(-6*time.Minute).Unix(), body), ingress.OutcomeStaleTimestamp, "tolerance"},
		{"t too far ahead", signature.Sign([]byte(testSecret), now.Add(6*time.Minute).Unix(), body), ingress.OutcomeStaleTimestamp, "tolerance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{})
			f.now = now
			resp := f.do(http.MethodPost, body, tt.signature)
			expect(t, resp, 401, "error", tt.reason)
			if got := f.stored(); got != 0 {
				t.Fatalf("stored: got %d, want 0", got)
			}
			if got := f.count("unknown", tt.outcome); got != 1 {
				t.Fatalf("%s metric: got %v, want 1", tt.outcome, got)
			}
			if b, _ := io.ReadAll(resp.Body); bytes.Contains(b, []byte(testSecret)) || bytes.Contains(b, []byte(valid[len("t=1775847600,v1="):])) {
				t.Fatalf("answer leaks the secret or a signature: %s", b)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	t.Run("over RELAY_MAX_BODY_BYTES with Content-Length", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{maxBody: 2048})
		body := envelope("evt_big", "batch_prediction.completed")
		body = append(body[:len(body)-1], []byte(`,"pad":"`+strings.Repeat("x", 2048)+`"}`)...)
		expect(t, f.post(body, testSecret), 413, "error", "larger than 2048")
		if got := f.count("unknown", ingress.OutcomeTooLarge); got != 1 {
			t.Fatalf("too_large metric: got %v, want 1", got)
		}
		if got := f.stored(); got != 0 {
			t.Fatalf("stored: got %d, want 0", got)
		}
	})
	t.Run("over the limit without Content-Length", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{maxBody: 2048})
		req, _ := http.NewRequest(http.MethodPost, f.url, io.MultiReader(strings.NewReader(strings.Repeat(" ", 4096))))
		req.ContentLength = -1 // chunked
		req.Header.Set(signature.Header, signature.Sign([]byte(testSecret), f.now.Unix(), nil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		expect(t, resp, 413, "error", "larger than")
	})
	t.Run("a budget of one body: over the limit is 413, never 503", func(t *testing.T) {
		// The buffer doubles as bytes arrive; growing must not need the
		// old and the new buffer at once, or a body over the limit would
		// get 503 overloaded on every retry instead of 413.
		limit := 16 << 10
		f := newFixture(t, fixtureOpts{maxBody: int64(limit), maxInflight: int64(limit)})
		for _, size := range []int{limit/2 + 1, limit + 1, 2 * limit} {
			body := bytes.Repeat([]byte(" "), size)
			req, _ := http.NewRequest(http.MethodPost, f.url, io.MultiReader(bytes.NewReader(body)))
			req.ContentLength = -1 // chunked: only reading tells the size
			req.Header.Set(signature.Header, signature.Sign([]byte(testSecret), f.now.Unix(), body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			want := 200 // quarantined: signed, not JSON
			if size > limit {
				want = 413
			}
			if resp.StatusCode != want {
				t.Errorf("%d bytes chunked against a limit and budget of %d: got %d, want %d", size, limit, resp.StatusCode, want)
			}
			resp.Body.Close()
		}
		body := envelope("evt_at_limit", "batch_prediction.completed")
		body = append(body, bytes.Repeat([]byte(" "), limit-len(body))...)
		expect(t, f.post(body, testSecret), 200, "status", "stored")
	})
	t.Run("exactly the limit is read", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{maxBody: 2048})
		body := envelope("evt_fit", "batch_prediction.completed")
		body = append(body, bytes.Repeat([]byte(" "), 2048-len(body))...)
		expect(t, f.post(body, testSecret), 200, "status", "stored")
	})
	t.Run("capped by the NATS server's max_payload", func(t *testing.T) {
		opts := natstest.Options(t.TempDir())
		opts.MaxPayload = 16 << 10
		f := newFixture(t, fixtureOpts{natsOpts: opts, maxBody: 1 << 20})
		limit := int64(16<<10) - publish.HeaderRoom
		if got := testutil.ToFloat64(f.metrics.BodyLimit); got != float64(limit) {
			t.Fatalf("body limit gauge (set before any delivery): got %v, want %d", got, limit)
		}
		body := envelope("evt_nats_cap", "batch_prediction.completed")
		body = append(body, bytes.Repeat([]byte(" "), int(limit)+1-len(body))...)
		expect(t, f.post(body, testSecret), 413, "error", fmt.Sprintf("larger than %d", limit))
		if got := testutil.ToFloat64(f.metrics.BodyLimit); got != float64(limit) {
			t.Fatalf("body limit gauge (set before any delivery): got %v, want %d", got, limit)
		}
		// Just under the cap still fits, headers included.
		expect(t, f.post(body[:limit], testSecret), 200, "status", "stored")
	})
}

// TestQuarantine: a delivery Datagrid signed is never thrown away. One that
// cannot go on its event-type subject is stored byte for byte on
// datagrid._quarantine, keyed by its id when usable, else by the body's
// hash, and answered 2xx so Datagrid does not retry it into oblivion.
func TestQuarantine(t *testing.T) {
	hashed := func(body string) string {
		sum := sha256.Sum256([]byte(body))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	tests := []struct {
		name, body, reason, msgID string
	}{
		{"not JSON", `not json`, "not a JSON object", ""},
		{"JSON array", `[1,2]`, "not a JSON object", ""},
		{"truncated JSON", `{"id":"evt_1","event_type":"batch_prediction.completed"`, "not a JSON object", ""},
		{"null", `null`, "not a JSON object", ""},
		{"no id", `{"event_type":"batch_prediction.completed"}`, "no id", ""},
		{"no event_type", `{"id":"evt_q1"}`, "no event_type", "evt_q1"},
		{"id not a string", `{"id":7,"event_type":"batch_prediction.completed"}`, "must be strings", ""},
		{"empty id", `{"id":"","event_type":"batch_prediction.completed"}`, "visible ASCII", ""},
		{"id with a line break", `{"id":"evt\r\nNats-Msg-Id: x","event_type":"batch_prediction.completed"}`, "visible ASCII", ""},
		{"id too long", `{"id":"` + strings.Repeat("a", 257) + `","event_type":"batch_prediction.completed"}`, "visible ASCII", ""},
		{"wildcard event type", `{"id":"evt_q2","event_type":"batch_prediction.*"}`, "safe subject token", "evt_q2"},
		{"full wildcard event type", `{"id":"evt_q3","event_type":"batch.>"}`, "safe subject token", "evt_q3"},
		{"empty token", `{"id":"evt_q4","event_type":"batch..completed"}`, "safe subject token", "evt_q4"},
		{"upper case", `{"id":"evt_q5","event_type":"Batch_Prediction.Completed"}`, "safe subject token", "evt_q5"},
		{"the relay's own token", `{"id":"evt_q6","event_type":"_quarantine"}`, "safe subject token", "evt_q6"},
		{"duplicate event_type", `{"id":"evt_q7","event_type":"a.b","event_type":"c.d"}`, "more than one copy", "evt_q7"},
		{"case variant event_type", `{"id":"evt_q8","event_type":"a.b","EVENT_TYPE":"c.d"}`, "case variant", "evt_q8"},
		{"case variant id", `{"id":"evt_q9","ID":"evt_x","event_type":"a.b"}`, "case variant", "evt_q9"},
		{"escaped duplicate key", `{"id":"evt_q10","event_type":"a.b","\u0065vent_type":"c.d"}`, "more than one copy", "evt_q10"},
		{"unicode fold variant", `{"id":"evt_q11","event_type":"a.b","timeſtamp":1}`, "case variant", "evt_q11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{webhookID: "wh_q"})
			sub, err := f.nc.SubscribeSync("datagrid._quarantine")
			if err != nil {
				t.Fatal(err)
			}
			expect(t, f.post([]byte(tt.body), testSecret), 200, "status", "quarantined")
			if got := f.count("unknown", ingress.OutcomeQuarantined); got != 1 {
				t.Fatalf("quarantined metric: got %v, want 1", got)
			}
			if got := f.stored(); got != 1 {
				t.Fatalf("stored: got %d, want 1", got)
			}
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			wantID := tt.msgID
			if wantID == "" {
				wantID = hashed(tt.body)
			}
			if !bytes.Equal(msg.Data, []byte(tt.body)) || msg.Header.Get("Nats-Msg-Id") != wantID ||
				!strings.Contains(msg.Header.Get("Datagrid-Quarantine-Reason"), tt.reason) || msg.Header.Get("Datagrid-Webhook-Id") != "wh_q" {
				t.Fatalf("quarantined message: got %q with headers %v, want the body with id %s and reason %q", msg.Data, msg.Header, wantID, tt.reason)
			}
			// Datagrid's retry of the same delivery is stored once.
			f.now = f.now.Add(time.Second)
			expect(t, f.post([]byte(tt.body), testSecret), 200, "status", "quarantined")
			if got := f.stored(); got != 1 {
				t.Fatalf("stored after a retry: got %d, want 1", got)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		t.Run(method, func(t *testing.T) {
			resp := f.do(method, nil, "")
			expect(t, resp, 405, "error", "use POST")
			if got := resp.Header.Get("Allow"); got != "POST" {
				t.Fatalf("Allow: got %q, want POST", got)
			}
		})
	}
	if got := f.count("unknown", ingress.OutcomeMethodNotAllowed); got != 5 {
		t.Fatalf("method_not_allowed metric: got %v, want 5", got)
	}
}

func TestUnavailable(t *testing.T) {
	body := envelope("evt_503", "batch_prediction.completed")
	check := func(t *testing.T, f *fixture, resp *http.Response, reason, label string) {
		t.Helper()
		expect(t, resp, 503, "error", reason)
		if got := resp.Header.Get("Retry-After"); got == "" {
			t.Fatal("no Retry-After on 503")
		}
		if got := f.count(label, ingress.OutcomeUnavailable); got != 1 {
			t.Fatalf("unavailable metric: got %v, want 1", got)
		}
	}
	t.Run("no secret known yet", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{keys: signature.Static{}})
		check(t, f, f.post(body, testSecret), "no signing secret", "unknown")
		if got := f.stored(); got != 0 {
			t.Fatalf("stored: got %d, want 0", got)
		}
	})
	t.Run("no stream to store in", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{noStream: true, pubTimeout: 500 * time.Millisecond})
		check(t, f, f.post(body, testSecret), "did not confirm", "batch_prediction.completed")
		if got := testutil.ToFloat64(f.metrics.PublishFailures); got != 1 {
			t.Fatalf("publish failures: got %v, want 1", got)
		}
	})
	t.Run("bus gone", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{})
		f.nats.Shutdown()
		f.nats.WaitForShutdown()
		check(t, f, f.post(body, testSecret), "did not confirm", "batch_prediction.completed")
	})
}

func TestUnknownEventTypeRelayedAsOther(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	expect(t, f.post(envelope("evt_new", "dataset.sync.finished"), testSecret), 200, "status", "stored")
	if got := f.count("other", ingress.OutcomePublished); got != 1 {
		t.Fatalf("other metric: got %v, want 1", got)
	}
}

func TestCoreModePublishesWithoutStream(t *testing.T) {
	f := newFixture(t, fixtureOpts{core: true, noStream: true})
	sub, err := f.nc.SubscribeSync("datagrid.>")
	if err != nil {
		t.Fatal(err)
	}
	body := envelope("evt_core", "batch_prediction.expired")
	// Nothing is stored in core mode: the answer must not say so.
	expect(t, f.post(body, testSecret), 200, "status", "published")
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no message in core mode: %v", err)
	}
	if !bytes.Equal(msg.Data, body) {
		t.Fatalf("payload: got %s, want %s", msg.Data, body)
	}
}

// TestSubscriberSees checks what an ordinary subscriber receives: the subject,
// the body byte for byte and every header, with the CloudEvents headers read
// by the CloudEvents SDK.
func TestSubscriberSees(t *testing.T) {
	f := newFixture(t, fixtureOpts{webhookID: "wh_123"})
	sub, err := f.nc.SubscribeSync("datagrid.>")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_7f3d8a2c","event_type":"batch_prediction.completed","timestamp":1775847600,` +
		`"data":{"object":"batch_prediction","id":"bpred_abc123","status":"completed","results_url":"/v1/batch-predictions/bpred_abc123/results"}}`)
	expect(t, f.post(body, testSecret), 200, "status", "stored")

	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "datagrid.batch_prediction.completed" {
		t.Fatalf("subject: got %s, want datagrid.batch_prediction.completed", msg.Subject)
	}
	if !bytes.Equal(msg.Data, body) {
		t.Fatalf("payload: got %s, want %s", msg.Data, body)
	}
	want := map[string]string{
		"Nats-Msg-Id":         "evt_7f3d8a2c",
		"Content-Type":        "application/json",
		"ce-specversion":      "1.0",
		"ce-id":               "evt_7f3d8a2c",
		"ce-type":             "batch_prediction.completed",
		"ce-source":           "https://api.datagrid.com",
		"ce-time":             "2026-04-10T19:00:00Z",
		"Datagrid-Webhook-Id": "wh_123",
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s: got %q, want %q", k, got, v)
		}
	}

	// Read it as a CloudEvents SDK reads a binary-mode message.
	h := http.Header{}
	for k, vs := range msg.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	ev, err := binding.ToEvent(context.Background(), cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(msg.Data))))
	if err != nil {
		t.Fatalf("CloudEvents SDK cannot read the message: %v", err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("CloudEvents validation: %v", err)
	}
	if ev.ID() != "evt_7f3d8a2c" || ev.Type() != "batch_prediction.completed" || ev.Source() != "https://api.datagrid.com" ||
		ev.DataContentType() != "application/json" || !ev.Time().Equal(time.Unix(1775847600, 0)) || !bytes.Equal(ev.Data(), body) {
		t.Fatalf("CloudEvent: got %s", ev)
	}
}

func TestUnknownPathIsNotTheHandlersConcern(t *testing.T) {
	// The handler answers whatever path it is mounted on; routing is the
	// server's. This guards that a POST with a query string still works.
	f := newFixture(t, fixtureOpts{})
	f.url += "?source=datagrid"
	expect(t, f.post(envelope("evt_q", "batch_prediction.completed"), testSecret), 200, "status", "stored")
}
