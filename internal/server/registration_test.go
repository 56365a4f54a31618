package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/bootstrap"
	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/server"
)

// The registrar's own behaviours (replicas starting together, restarts,
// strays, drift, rate limits, rotation, deregistration, a lost state
// bucket) are tested on bootstrap.Registrar in internal/bootstrap. These
// tests keep what only the whole relay shows: the wiring of the registrar
// into readiness, the delivery handler, metrics and shutdown, and the
// end-to-end runs (rotation under load, a three-node cluster).

const (
	apiKey    = "dg_test_key_7c1e55"
	publicURL = "https://relay.example.com/webhooks/datagrid"
)

// registering is a NATS server and a fake Datagrid API for relays that
// register themselves.
type registering struct {
	t    *testing.T
	nats string
	api  *datagridtest.Server
	env  map[string]string
}

func newRegistering(t *testing.T) *registering {
	t.Helper()
	return newRegisteringOn(t, natstest.Start(t, nil).ClientURL())
}

// newRegisteringOn is newRegistering against the NATS servers at natsURL.
func newRegisteringOn(t *testing.T, natsURL string) *registering {
	t.Helper()
	api, err := datagridtest.Start(datagridtest.Options{APIKey: apiKey, MaxPageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	return &registering{t: t, nats: natsURL, api: api, env: map[string]string{
		"RELAY_WEBHOOK_SECRET":     "",
		"DATAGRID_API_KEY":         apiKey,
		"DATAGRID_BASE_URL":        api.URL(),
		"RELAY_PUBLIC_URL":         publicURL,
		"RELAY_RECONCILE_INTERVAL": "100ms",
	}}
}

func (g *registering) start(extra ...string) *relay {
	g.t.Helper()
	return start(g.t, g.nats, maps(g.env, extra...), nil)
}

// startTogether starts n relays at the same instant and waits until every
// one is ready.
func (g *registering) startTogether(n int, within time.Duration) []*relay {
	g.t.Helper()
	relays := make([]*relay, n)
	var wg sync.WaitGroup
	for i := range relays {
		wg.Go(func() { relays[i] = g.start() })
	}
	wg.Wait()
	for _, r := range relays {
		relaytest.WaitStatus(g.t, within, r.admin+"/readyz", 200)
	}
	return relays
}

func maps(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// ours lists the webhooks for our URL at the fake.
func (g *registering) ours() []string { return g.api.For(publicURL) }

func (g *registering) onlyWebhook() string {
	g.t.Helper()
	ids := g.ours()
	if len(ids) != 1 {
		g.t.Fatalf("webhooks for our URL: got %v, want exactly one", ids)
	}
	return ids[0]
}

// registrar is what `relay rotate`, `status` and `deregister` use.
func (g *registering) registrar(grace time.Duration) *bootstrap.Registrar {
	g.t.Helper()
	env := maps(g.env, "NATS_URL", g.nats, "RELAY_ROTATION_GRACE", grace.String())
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		g.t.Fatal(err)
	}
	parts, err := server.Build(cfg, "test", zap.NewNop(), metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}))
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(parts.Conn.Close)
	return parts.Registrar
}

func deliver(t *testing.T, r *relay, secret, id string) relaytest.Response {
	t.Helper()
	resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope(id, "batch_prediction.completed"))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestRelayRegistersAndServes is the wiring of a registering relay: its
// registrar uses the configured key, URL, events and User-Agent, the
// delivery handler verifies with the registrar's keyring, and the metrics
// show the registration. What the registrar does is tested in
// internal/bootstrap.
func TestRelayRegistersAndServes(t *testing.T) {
	g := newRegistering(t)
	r := g.start()
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)

	if n := g.api.Count("POST", "/v1/webhooks"); n != 1 {
		t.Fatalf("creates: got %d, want 1", n)
	}
	for _, req := range g.api.Requests() {
		if !req.AuthOK {
			t.Errorf("%s %s without the right Bearer key", req.Method, req.Path)
		}
		if ua := req.Header.Get("User-Agent"); !strings.HasPrefix(ua, "datagrid-relay/") {
			t.Errorf("User-Agent: got %q, want datagrid-relay/<version>", ua)
		}
		if req.Method == "POST" {
			if req.Body["url"] != publicURL {
				t.Errorf("create url: got %v, want %s", req.Body["url"], publicURL)
			}
			if events := req.Events(); !slices.Equal(events, event.Known()) {
				t.Errorf("create events: got %v, want %v (RELAY_EVENTS' default)", events, event.Known())
			}
		}
	}
	id := g.onlyWebhook()
	if resp := deliver(t, r, g.api.Secret(id), "evt_first"); resp.Status != 200 {
		t.Fatalf("delivery: got %d %s, want 200", resp.Status, resp.Body)
	}
	if resp := deliver(t, r, "whsec_not_the_registered_one", "evt_other"); resp.Status != 401 {
		t.Fatalf("delivery with another secret: got %d %s, want 401", resp.Status, resp.Body)
	}
	for _, want := range []string{
		"datagrid_relay_registration_healthy 1",
		`datagrid_relay_api_requests_total{operation="create",status_class="2xx"} 1`,
		"datagrid_relay_signing_secrets 1",
	} {
		// The reconcile records its outcome just after the secret is in use.
		relaytest.WaitFor(t, 5*time.Second, "metric "+want, func() bool {
			m, _ := relaytest.Get(r.admin + "/metrics")
			return strings.Contains(m.Body, want)
		})
	}
}

func TestRejectedAPIKeyStopsTheStart(t *testing.T) {
	g := newRegistering(t)
	env := maps(g.env, "DATAGRID_API_KEY", "dg_wrong_key_5150", "NATS_URL", g.nats,
		"RELAY_LISTEN_ADDR", "127.0.0.1:0", "RELAY_ADMIN_ADDR", "127.0.0.1:0")
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	done := make(chan error, 1)
	go func() {
		done <- server.Run(context.Background(), server.Options{Config: cfg, Log: logs.logger(), Registry: prometheus.NewRegistry()})
	}()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay kept running with a rejected API key")
	}
	var fatal *bootstrap.FatalError
	if !errors.As(err, &fatal) || !strings.Contains(err.Error(), "DATAGRID_API_KEY") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("got %v, want a FatalError naming DATAGRID_API_KEY and the 401", err)
	}
	if strings.Contains(err.Error()+logs.String(), "dg_wrong_key_5150") {
		t.Fatal("the API key leaked into the error or the logs")
	}
}

// TestReadinessNamesTheRegistrationProblem: with no secret stored and the
// API unreachable, /readyz answers 503 naming the registration, and
// deliveries 503 (Datagrid retries them).
func TestReadinessNamesTheRegistrationProblem(t *testing.T) {
	g := newRegistering(t)
	_ = g.api.Close()
	r := g.start()
	relaytest.WaitFor(t, 10*time.Second, "readyz to name the registration", func() bool {
		resp, _ := relaytest.Get(r.admin + "/readyz")
		return resp.Status == 503 && strings.Contains(resp.Body, "signing_secret: no signing secret known yet")
	})
	if resp := deliver(t, r, "whsec_anything", "evt_unreachable"); resp.Status != 503 {
		t.Fatalf("delivery: got %d, want 503", resp.Status)
	}
}

// TestRotateUnderLoad rotates while a simulated Datagrid delivers a steady
// stream of events through every webhook registered for our URL, each
// signed with that webhook's secret and retried until answered 2xx (at
// least once, as Datagrid does). No event is lost or stored twice; after the
// grace period the old secret is refused and the old webhook is gone.
func TestRotateUnderLoad(t *testing.T) {
	g := newRegistering(t)
	r := g.start()
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	old := g.onlyWebhook()
	oldSecret := g.api.Secret(old)

	var (
		sent   atomic.Int64
		stop   atomic.Bool
		failed atomic.Value
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			id := fmt.Sprintf("evt_rot_%d", i)
			for _, wh := range g.api.Webhooks() {
				if wh.URL != publicURL || !wh.Enabled {
					continue
				}
				deadline := time.Now().Add(20 * time.Second)
				for {
					resp, err := relaytest.Post(r.delivery, g.api.Secret(wh.ID), relaytest.Envelope(id, "batch_prediction.completed"))
					if err == nil && resp.Status == 200 {
						break
					}
					if _, exists := g.api.Webhook(wh.ID); !exists {
						break // Datagrid stops delivering through a deleted webhook
					}
					if time.Now().After(deadline) {
						failed.Store(fmt.Sprintf("%s through %s never accepted (last %d)", id, wh.ID, resp.Status))
						return
					}
				}
			}
			sent.Store(int64(i + 1))
		}
	})
	relaytest.WaitFor(t, 10*time.Second, "events before the rotation", func() bool { return sent.Load() >= 20 })

	st, err := g.registrar(time.Second).Rotate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Previous == nil || st.Previous.WebhookID != old || st.WebhookID == old {
		t.Fatalf("rotated state: got %s, want a new webhook with %s as previous", st.Summary(), old)
	}
	before := sent.Load()
	relaytest.WaitFor(t, 10*time.Second, "events during the grace period", func() bool { return sent.Load() >= before+20 })
	relaytest.WaitFor(t, 10*time.Second, "the old webhook to be deleted after the grace", func() bool {
		_, ok := g.api.Webhook(old)
		return !ok
	})
	if resp := deliver(t, r, oldSecret, "evt_old_secret"); resp.Status != 401 {
		t.Fatalf("delivery with the old secret after the grace: got %d, want 401", resp.Status)
	}
	after := sent.Load()
	relaytest.WaitFor(t, 10*time.Second, "events after the rotation", func() bool { return sent.Load() >= after+20 })
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}

	ids := streamMsgIDs(t, g.nats)
	for i := range int(sent.Load()) {
		if id := fmt.Sprintf("evt_rot_%d", i); ids[id] != 1 {
			t.Errorf("%s stored %d times, want 1", id, ids[id])
		}
	}
	if id := g.onlyWebhook(); id != st.WebhookID {
		t.Fatalf("webhook for our URL: got %s, want the rotated %s", id, st.WebhookID)
	}
}

func TestDeregisterOnShutdownOnlyWhenAskedTo(t *testing.T) {
	g := newRegistering(t)
	r := g.start()
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	r.stop(t)
	if n := len(g.ours()); n != 1 {
		t.Fatalf("after an ordinary shutdown: got %d webhooks, want the webhook kept", n)
	}

	r = g.start("RELAY_DEREGISTER_ON_SHUTDOWN", "true")
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	r.stop(t)
	if left := g.ours(); len(left) != 0 {
		t.Fatalf("after a shutdown with RELAY_DEREGISTER_ON_SHUTDOWN=true: webhooks left %v", left)
	}
}

// TestThreeNodeCluster runs two registering relays against a three-node
// JetStream cluster with replicated stream and bucket, then loses a node:
// one webhook is registered, deliveries go on after the loss (retried while
// the relay reconnects, as Datagrid would), and every event answered 2xx is
// stored exactly once.
func TestThreeNodeCluster(t *testing.T) {
	cluster := natstest.StartCluster(t, 3)
	g := newRegisteringOn(t, cluster.URL())
	g.env["RELAY_RECONCILE_INTERVAL"] = "1s"
	g.env["RELAY_STREAM_REPLICAS"] = "3"
	g.env["RELAY_PUBLISH_TIMEOUT"] = "3s"
	relays := g.startTogether(2, 30*time.Second)
	secret := g.api.Secret(g.onlyWebhook())

	js := natstest.JetStream(t, cluster.URL())
	s, err := js.Stream(context.Background(), "DATAGRID")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("stream replicas: got %d, want 3", n)
	}

	// deliverAll sends events from..to through both relays, retrying each
	// until answered 2xx, like Datagrid.
	deliverAll := func(from, to int) {
		for i := from; i < to; i++ {
			r := relays[i%2]
			id := fmt.Sprintf("evt_cluster_%d", i)
			relaytest.WaitFor(t, 30*time.Second, id+" to be accepted", func() bool {
				return deliver(t, r, secret, id).Status == 200
			})
		}
	}
	deliverAll(0, 20)
	cluster.Servers[0].Shutdown()
	cluster.Servers[0].WaitForShutdown()
	deliverAll(20, 40)

	ids := streamMsgIDs(t, cluster.URL())
	for i := range 40 {
		if id := fmt.Sprintf("evt_cluster_%d", i); ids[id] != 1 {
			t.Errorf("%s stored %d times, want 1", id, ids[id])
		}
	}
	if len(ids) != 40 {
		t.Errorf("stream holds %d events, want 40", len(ids))
	}
}
