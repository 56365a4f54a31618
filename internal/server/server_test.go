package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/server"
	"github.com/datagrid-relay/relay/internal/signature"
)

const secret = "whsec_server_test_secret"

type relay struct {
	delivery, admin string
	done            chan error
	cancel          context.CancelFunc
	stopped         sync.Once
}

// start runs the relay against natsURL with env on top of a test baseline,
// and stops it when the test ends.
func start(t *testing.T, natsURL string, env map[string]string, log *zap.Logger) *relay {
	t.Helper()
	base := map[string]string{
		"RELAY_WEBHOOK_SECRET":  secret,
		"NATS_URL":              natsURL,
		"NATS_RECONNECT_WAIT":   "50ms",
		"RELAY_PUBLISH_TIMEOUT": "1s",
		"RELAY_LISTEN_ADDR":     "127.0.0.1:0",
		"RELAY_ADMIN_ADDR":      "127.0.0.1:0",
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.Load(func(k string) string { return base[k] })
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{done: make(chan error, 1), cancel: cancel}
	addrs := make(chan [2]net.Addr, 1)
	go func() {
		r.done <- server.Run(ctx, server.Options{
			Config: cfg, Log: log, Registry: prometheus.NewRegistry(),
			Listening: func(p, a net.Addr) { addrs <- [2]net.Addr{p, a} },
		})
	}()
	select {
	case a := <-addrs:
		r.delivery = "http://" + a[0].String() + cfg.DeliveryPath()
		r.admin = "http://" + a[1].String()
	case err := <-r.done:
		t.Fatalf("relay stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not listen within 10s")
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the relay as SIGTERM does and checks it ends cleanly; it may
// be called more than once.
func (r *relay) stop(t *testing.T) {
	r.stopped.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("relay stopped with %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30s")
		}
	})
}

func streamMsgIDs(t *testing.T, url string) map[string]int {
	t.Helper()
	js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "DATAGRID")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	ids := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	return ids
}

func TestReadyAndDelivers(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), nil, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	if got, _ := relaytest.Get(r.admin + "/healthz"); got.Status != 200 {
		t.Fatalf("healthz: got %d, want 200", got.Status)
	}

	resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_ready", "batch_prediction.completed"))
	if err != nil || resp.Status != 200 {
		t.Fatalf("delivery: got %d %s %v, want 200", resp.Status, resp.Body, err)
	}
	metrics, _ := relaytest.Get(r.admin + "/metrics")
	for _, want := range []string{
		`datagrid_relay_deliveries_total{event_type="batch_prediction.completed",outcome="published"} 1`,
		`datagrid_relay_nats_connected 1`,
		`datagrid_relay_signing_secrets 1`,
		`datagrid_relay_build_info{`,
		`go_goroutines`,
		`process_`,
	} {
		if !strings.Contains(metrics.Body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestPublicListenerServesOnlyTheDeliveryPath(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{"RELAY_PUBLIC_URL": "https://relay.example.com/hooks/dg"}, nil)
	base := strings.TrimSuffix(r.delivery, "/hooks/dg")
	for _, path := range []string{"/", "/metrics", "/readyz", "/webhooks/datagrid", "/hooks/dg/extra"} {
		resp, err := relaytest.Post(base+path, secret, relaytest.Envelope("evt_path", "batch_prediction.completed"))
		if err != nil || resp.Status != 404 || !strings.Contains(resp.Body, `"error":"not found"`) {
			t.Errorf("POST %s: got %d %q %v, want 404", path, resp.Status, resp.Body, err)
		}
	}
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_path", "batch_prediction.completed"))
	if err != nil || resp.Status != 200 {
		t.Fatalf("POST /hooks/dg: got %d %v, want 200", resp.Status, err)
	}
	m, _ := relaytest.Get(r.admin + "/metrics")
	if !strings.Contains(m.Body, "datagrid_relay_unknown_path_requests_total 5") {
		t.Fatal("unknown path requests not counted")
	}
}

// TestNATSOutage stops NATS under a steady stream of deliveries and brings
// it back: meanwhile deliveries answer 503 with Retry-After and /readyz
// turns 503; afterwards deliveries succeed again, and every event that got a
// 2xx is in the stream exactly once.
func TestNATSOutage(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, natstest.Options(dir))
	port := natstest.Port(ns)
	r := start(t, ns.ClientURL(), nil, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)

	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		refused  int
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	// Two senders, like Datagrid's parallel deliveries; every refused event is
	// retried until accepted, as Datagrid does.
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("evt_w%d_%d", w, i)
				for !stop.Load() {
					resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope(id, "batch_prediction.completed"))
					if err == nil && resp.Status == 200 {
						mu.Lock()
						accepted[id] = true
						mu.Unlock()
						break
					}
					if err == nil && resp.Status == 503 {
						if resp.Header.Get("Retry-After") == "" {
							t.Error("503 without Retry-After")
						}
						mu.Lock()
						refused++
						mu.Unlock()
					}
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	refusals := func() int { mu.Lock(); defer mu.Unlock(); return refused }

	relaytest.WaitFor(t, 10*time.Second, "deliveries before the outage", func() bool { return count() >= 20 })
	ns.Shutdown()
	ns.WaitForShutdown()
	ready := relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	if !strings.Contains(ready.Body, "nats") {
		t.Errorf("readyz body: got %q, want the reason to name nats", ready.Body)
	}
	relaytest.WaitFor(t, 10*time.Second, "deliveries refused with 503", func() bool { return refusals() >= 5 })

	opts := natstest.Options(dir)
	opts.Port = port
	natstest.Start(t, opts)
	relaytest.WaitStatus(t, 20*time.Second, r.admin+"/readyz", 200)
	during := count()
	relaytest.WaitFor(t, 10*time.Second, "deliveries after the outage", func() bool { return count() >= during+20 })
	stop.Store(true)
	wg.Wait()

	ids := streamMsgIDs(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	mu.Lock()
	defer mu.Unlock()
	for id := range accepted {
		if ids[id] != 1 {
			t.Errorf("event %s answered 2xx is stored %d times, want 1", id, ids[id])
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s stored %d times, want 1", id, n)
		}
	}
}

func TestAdoptsExistingStreamWithoutChangingIt(t *testing.T) {
	ns := natstest.Start(t, nil)
	js := natstest.JetStream(t, ns.ClientURL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DATAGRID", Subjects: []string{"datagrid.>"}, MaxMsgs: 1000, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	r := start(t, ns.ClientURL(), nil, logs.logger())
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	s, _ := js.Stream(ctx, "DATAGRID")
	info, _ := s.Info(ctx)
	if info.Config.MaxMsgs != 1000 || info.Config.Duplicates != 10*time.Minute {
		t.Fatalf("stream changed: got MaxMsgs %d Duplicates %s, want 1000 and 10m", info.Config.MaxMsgs, info.Config.Duplicates)
	}
	relaytest.WaitFor(t, 5*time.Second, "a warning about the short duplicate window", func() bool {
		return strings.Contains(logs.String(), "duplicate window of 10m0s")
	})
}

func TestStreamThatDoesNotCaptureTheSubjectsIsReported(t *testing.T) {
	ns := natstest.Start(t, nil)
	js := natstest.JetStream(t, ns.ClientURL())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "DATAGRID", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	r := start(t, ns.ClientURL(), nil, nil)
	got := relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	relaytest.WaitFor(t, 10*time.Second, "readyz to name the mismatch", func() bool {
		got, _ = relaytest.Get(r.admin + "/readyz")
		return strings.Contains(got.Body, "do not capture")
	})
	resp, _ := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_x", "batch_prediction.completed"))
	if resp.Status != 503 {
		t.Fatalf("delivery: got %d, want 503", resp.Status)
	}
}

func TestCoreModeNeedsNoStream(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{"RELAY_PUBLISH_MODE": "core"}, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, _ := nc.SubscribeSync("datagrid.>")
	if err := nc.Flush(); err != nil { // the server knows the subscription before the relay publishes
		t.Fatal(err)
	}
	resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_core", "batch_prediction.cancelled"))
	if err != nil || resp.Status != 200 {
		t.Fatalf("delivery: got %d %v, want 200", resp.Status, err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != "datagrid.batch_prediction.cancelled" {
		t.Fatalf("got %v %v, want the message on datagrid.batch_prediction.cancelled", m, err)
	}
}

// TestShutdownFinishesInFlightDeliveries stops the relay while a delivery
// is half received: readiness turns false first, the delivery still
// completes and is stored, then the relay exits cleanly.
func TestShutdownFinishesInFlightDeliveries(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), nil, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)

	body := relaytest.Envelope("evt_in_flight", "batch_prediction.completed")
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, r.delivery, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set(signature.Header, signature.Sign([]byte(secret), time.Now().Unix(), body))
	answered := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	if _, err := pw.Write(body[:10]); err != nil {
		t.Fatal(err)
	}
	relaytest.WaitFor(t, 10*time.Second, "the delivery to be in flight", func() bool {
		m, _ := relaytest.Get(r.admin + "/metrics")
		return strings.Contains(m.Body, "datagrid_relay_deliveries_in_flight 1")
	})

	r.cancel() // SIGTERM
	ready := relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	if !strings.Contains(ready.Body, "shutting down") {
		t.Fatalf("readyz during shutdown: got %q, want shutting down", ready.Body)
	}
	if _, err := pw.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	if status := <-answered; status != 200 {
		t.Fatalf("in-flight delivery: got %d, want 200", status)
	}
	r.stop(t)
	if ids := streamMsgIDs(t, ns.ClientURL()); ids["evt_in_flight"] != 1 {
		t.Fatalf("in-flight delivery stored %d times, want 1", ids["evt_in_flight"])
	}
}
