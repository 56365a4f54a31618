package bootstrap

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

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
)

// These tests run bootstrap.Registrar against what it talks to in
// production, in-process: a real nats-server with JetStream (the state
// bucket) and the fake Datagrid API over loopback HTTP. Each replica has its
// own NATS connection, API client and metrics, as separate relays do.

const (
	testAPIKey = "dg_test_key_7c1e55"
	testURL    = "https://relay.example.com/webhooks/datagrid"
	testBucket = "datagrid_relay"
)

// fixture is one NATS server and one fake Datagrid API shared by replicas,
// and a clock they all read (real time, moved forward on demand).
type fixture struct {
	t     *testing.T
	nats  string
	api   *datagridtest.Server
	js    jetstream.JetStream // the test's own connection, to look at the bucket
	store *Store
	clock clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ns := natstest.Start(t, nil)
	// Pages of two, so that every list crosses pages.
	api, err := datagridtest.Start(datagridtest.Options{APIKey: testAPIKey, MaxPageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	js := natstest.JetStream(t, ns.ClientURL())
	return &fixture{t: t, nats: ns.ClientURL(), api: api, js: js, store: NewStore(js, testBucket, 1)}
}

// clock is time.Now moved forward by advance, so that tests can end a
// rotation's grace period without waiting for it.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// replica is one relay's registrar.
type replica struct {
	*Registrar
	t      *testing.T
	m      *metrics.Metrics
	health *recordingGauge
	logs   *observer.ObservedLogs

	once   sync.Once
	cancel context.CancelFunc
	done   chan error
	err    error
}

// replica returns a registrar named name with the test configuration, as
// tweak changes it (tweak may be nil). It is not running: call run, or
// drive it with Reconcile.
func (f *fixture) replica(name string, tweak func(*Config)) *replica {
	f.t.Helper()
	return f.replicaWithKey(name, testAPIKey, tweak)
}

func (f *fixture) replicaWithKey(name, key string, tweak func(*Config)) *replica {
	f.t.Helper()
	cfg := Config{
		PublicURL: testURL, Events: event.Known(),
		ReconcileInterval: 100 * time.Millisecond, RotationGrace: time.Minute,
		Instance: name, SyncInterval: 200 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	client, err := datagrid.New(datagrid.Config{BaseURL: f.api.URL(), APIKey: key, UserAgent: "datagrid-relay/test"})
	if err != nil {
		f.t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	health := &recordingGauge{Gauge: m.RegistrationHealthy}
	m.RegistrationHealthy = health
	core, logs := observer.New(zap.DebugLevel)
	r := &replica{t: f.t, m: m, health: health, logs: logs}
	r.Registrar = NewRegistrar(client, NewStore(natstest.JetStream(f.t, f.nats), testBucket, 1), cfg,
		zap.New(core).Named(name), m, f.clock.now)
	f.t.Cleanup(func() {
		if f.t.Failed() {
			f.t.Logf("logs of %s:\n%s", name, r.logText())
		}
	})
	return r
}

// run starts Run in the background until stop or the end of the test.
func (r *replica) run() *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.Run(ctx) }()
	r.t.Cleanup(func() {
		if err := r.stop(); err != nil {
			r.t.Errorf("Run: got %v, want nil after cancellation", err)
		}
	})
	return r
}

// stop ends Run as a shutdown does and returns its error.
func (r *replica) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("Run did not return within 30s of cancellation")
		}
	})
	return r.err
}

// accepted lists the secrets the replica's keyring accepts now.
func (r *replica) accepted() []string {
	var out []string
	for _, s := range r.Keyring().Accepted() {
		out = append(out, string(s.Key))
	}
	slices.Sort(out)
	return out
}

// acceptsOnly reports whether the keyring accepts exactly secrets.
func (r *replica) acceptsOnly(secrets ...string) bool {
	want := slices.Clone(secrets)
	slices.Sort(want)
	return slices.Equal(r.accepted(), want)
}

func (r *replica) healthy() float64 { return testutil.ToFloat64(r.m.RegistrationHealthy) }

func (r *replica) reconciles(o Outcome) float64 {
	return testutil.ToFloat64(r.m.Reconciles.WithLabelValues(string(o)))
}

// logText is every log entry with its fields, one a line.
func (r *replica) logText() string {
	var b strings.Builder
	for _, e := range r.logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

// waitRegistered waits until every replica accepts exactly the secret of
// the one webhook for our URL, and returns that webhook's id.
func (f *fixture) waitRegistered(within time.Duration, rs ...*replica) string {
	f.t.Helper()
	var id string
	relaytest.WaitFor(f.t, within, "every replica to hold the registered secret", func() bool {
		ids := f.ours()
		if len(ids) != 1 {
			return false
		}
		id = ids[0]
		for _, r := range rs {
			if !r.acceptsOnly(f.api.Secret(id)) {
				return false
			}
		}
		return true
	})
	return id
}

// ours lists the webhooks for our URL at the fake API.
func (f *fixture) ours() []string { return f.api.For(testURL) }

func (f *fixture) onlyWebhook() string {
	f.t.Helper()
	ids := f.ours()
	if len(ids) != 1 {
		f.t.Fatalf("webhooks for our URL: got %v, want exactly one", ids)
	}
	return ids[0]
}

func (f *fixture) creates() int { return f.api.Count("POST", "/v1/webhooks") }

// stored is the state in the bucket (the zero State when there is none).
func (f *fixture) stored() State {
	f.t.Helper()
	st, _, err := f.store.Load(context.Background())
	if err != nil && !errors.Is(err, ErrNoState) {
		f.t.Fatal(err)
	}
	return st
}

// recordingGauge is a gauge that remembers every value set, so a test can
// tell that registration_healthy dropped to 0 however briefly.
type recordingGauge struct {
	prometheus.Gauge
	mu   sync.Mutex
	seen []float64
}

func (g *recordingGauge) Set(v float64) {
	g.mu.Lock()
	g.seen = append(g.seen, v)
	g.mu.Unlock()
	g.Gauge.Set(v)
}

// forget drops the values seen so far.
func (g *recordingGauge) forget() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen = nil
}

// saw reports whether v was set since the last forget.
func (g *recordingGauge) saw(v float64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.seen, v)
}

func TestFirstStartRegistersOnce(t *testing.T) {
	f := newFixture(t)
	r := f.replica("a", nil).run()
	id := f.waitRegistered(10*time.Second, r)
	relaytest.WaitFor(t, 5*time.Second, "a healthy reconcile", func() bool {
		return r.healthy() == 1 && r.reconciles(ReconcileOK) >= 1
	})

	if n := f.creates(); n != 1 {
		t.Fatalf("creates: got %d, want 1", n)
	}
	for _, req := range f.api.Requests() {
		if !req.AuthOK {
			t.Errorf("%s %s without the right Bearer key", req.Method, req.Path)
		}
		if req.Method == "POST" {
			if req.Body["url"] != testURL {
				t.Errorf("create url: got %v, want %s", req.Body["url"], testURL)
			}
			if events := req.Events(); !slices.Equal(events, event.Known()) {
				t.Errorf("create events: got %v, want %v", events, event.Known())
			}
		}
	}
	st := f.stored()
	if !st.Registered() || st.WebhookID != id || st.Secret != f.api.Secret(id) || st.URL != testURL || !slices.Equal(st.Events, event.Known()) {
		t.Fatalf("stored state: got %s, want webhook %s with its secret", st.Summary(), id)
	}
	if r.reconciles(ReconcileRepaired) != 1 || r.reconciles(ReconcileFailed) != 0 {
		t.Errorf("reconciles: got repaired %v failed %v, want 1 and 0", r.reconciles(ReconcileRepaired), r.reconciles(ReconcileFailed))
	}
	if err := r.Check(); err != nil {
		t.Errorf("Check: got %v, want nil", err)
	}
}

func TestThreeReplicasStartingTogetherRegisterOneWebhook(t *testing.T) {
	f := newFixture(t)
	rs := []*replica{f.replica("a", nil), f.replica("b", nil), f.replica("c", nil)}
	for _, r := range rs {
		r.run()
	}
	f.waitRegistered(15*time.Second, rs...)
	if n := f.creates(); n != 1 {
		t.Fatalf("creates: got %d, want 1", n)
	}
}

func TestRestartCreatesNothing(t *testing.T) {
	f := newFixture(t)
	a := f.replica("a", nil).run()
	id := f.waitRegistered(10*time.Second, a)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	b := f.replica("a-restarted", nil).run()
	if got := f.waitRegistered(10*time.Second, b); got != id {
		t.Fatalf("webhook after the restart: got %s, want %s", got, id)
	}
	relaytest.WaitFor(t, 5*time.Second, "a reconcile after the restart", func() bool { return b.reconciles(ReconcileOK) >= 1 })
	if n := f.creates(); n != 1 {
		t.Fatalf("creates: got %d, want 1", n)
	}
}

func TestStaleWebhookForOurURLIsReplacedOthersUntouched(t *testing.T) {
	f := newFixture(t)
	var unrelated []string
	for i := range 5 {
		id, _ := f.api.Seed(fmt.Sprintf("https://other%d.example.com/hook", i), []string{"batch_prediction.failed"}, true)
		unrelated = append(unrelated, id)
	}
	stale, staleSecret := f.api.Seed(testURL, []string{"batch_prediction.completed"}, true)

	r := f.replica("a", nil).run()
	id := f.waitRegistered(10*time.Second, r) // the stale one is gone too
	if id == stale {
		t.Fatal("the stale webhook was kept")
	}
	for _, u := range unrelated {
		if _, ok := f.api.Webhook(u); !ok {
			t.Errorf("unrelated webhook %s was deleted", u)
		}
	}
	if slices.Contains(r.accepted(), staleSecret) {
		t.Fatal("the stale webhook's secret is accepted")
	}
}

func TestDriftIsRepaired(t *testing.T) {
	f := newFixture(t)
	a, b := f.replica("a", nil).run(), f.replica("b", nil).run()
	id := f.waitRegistered(10*time.Second, a, b)

	t.Run("disabled", func(t *testing.T) {
		f.api.Disable(id)
		relaytest.WaitFor(t, 10*time.Second, "the webhook to be enabled again", func() bool {
			wh, ok := f.api.Webhook(id)
			return ok && wh.Enabled
		})
	})
	t.Run("events changed", func(t *testing.T) {
		f.api.SetEvents(id, []string{"batch_prediction.failed"})
		relaytest.WaitFor(t, 10*time.Second, "the events to be restored", func() bool {
			wh, ok := f.api.Webhook(id)
			return ok && sameSet(wh.Events, event.Known())
		})
	})
	t.Run("deleted", func(t *testing.T) {
		f.api.Remove(id)
		relaytest.WaitFor(t, 10*time.Second, "a new webhook", func() bool {
			ids := f.ours()
			return len(ids) == 1 && ids[0] != id
		})
		fresh := f.waitRegistered(5*time.Second, a, b)
		if fresh == id {
			t.Fatal("the deleted webhook is still the registered one")
		}
	})
	if n := f.creates(); n != 2 {
		t.Fatalf("creates: got %d, want 2 (the first, and one after the delete)", n)
	}
}

func TestRateLimitedAtStart(t *testing.T) {
	f := newFixture(t)
	f.api.FailNext(2, 429, "1")
	r := f.replica("a", nil).run()
	f.waitRegistered(20*time.Second, r)
	limited := f.api.RateLimited()
	if len(limited) != 2 {
		t.Fatalf("429 answers: got %d, want 2", len(limited))
	}
	checkRetryAfterHonoured(t, f.api.Requests(), limited, time.Second)
	if n := f.creates(); n != 3 || len(f.ours()) != 1 {
		t.Fatalf("got %d create calls and %d webhooks, want 3 calls (two refused) and one webhook", n, len(f.ours()))
	}
}

// checkRetryAfterHonoured checks that the request after each of limited
// came at least floor after its answer.
func checkRetryAfterHonoured(t *testing.T, reqs, limited []datagridtest.Request, floor time.Duration) {
	t.Helper()
	for _, l := range limited {
		next := -1
		for i, req := range reqs {
			if req.Received.After(l.Answered) {
				next = i
				break
			}
		}
		if next < 0 {
			t.Errorf("no request after the 429 answered at %s", l.Answered.Format(time.StampMicro))
			continue
		}
		if gap := reqs[next].Received.Sub(l.Answered); gap < floor {
			t.Errorf("%s %s came %s after a 429 with Retry-After: 1, want at least %s", reqs[next].Method, reqs[next].Path, gap, floor)
		}
	}
}

// TestRetryAfterIsAFloor is issue 9's defect 12: three 429s with
// Retry-After: 1 exhaust the client's own retries (two), so the reconcile
// fails and gives its claim up; that write to the state used to wake the
// registrar's wait, and the next call came 3 ms after the last 429. Before
// the fix this test failed on the request after the third 429.
func TestRetryAfterIsAFloor(t *testing.T) {
	f := newFixture(t)
	f.api.FailNext(3, 429, "1")
	r := f.replica("a", nil).run()
	f.waitRegistered(20*time.Second, r)
	limited := f.api.RateLimited()
	if len(limited) != 3 {
		t.Fatalf("429 answers: got %d, want 3", len(limited))
	}
	checkRetryAfterHonoured(t, f.api.Requests(), limited, time.Second)
	if got := r.reconciles(ReconcileFailed); got != 1 {
		t.Errorf("failed reconciles: got %v, want 1 (the client retried twice itself)", got)
	}
	if !r.health.saw(0) {
		t.Error("registration_healthy was never 0 though a reconcile failed")
	}
	if n := f.creates(); n != 4 || len(f.ours()) != 1 {
		t.Fatalf("got %d create calls and %d webhooks, want 4 calls (three refused) and one webhook", n, len(f.ours()))
	}
}

func TestRejectedAPIKeyStopsTheStart(t *testing.T) {
	f := newFixture(t)
	r := f.replicaWithKey("a", "dg_wrong_key_5150", nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the registrar kept running with a rejected API key")
	}
	var fatal *FatalError
	if !errors.As(err, &fatal) || !strings.Contains(err.Error(), "DATAGRID_API_KEY") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("got %v, want a FatalError naming DATAGRID_API_KEY and the 401", err)
	}
	if strings.Contains(err.Error()+r.logText(), "dg_wrong_key_5150") {
		t.Fatal("the API key leaked into the error or the logs")
	}
	if n := f.creates(); n != 1 {
		t.Fatalf("create calls: got %d, want 1 (a 401 is not retried)", n)
	}
}

func TestUnreachableAPI(t *testing.T) {
	t.Run("no stored state: not ready, with the reason", func(t *testing.T) {
		f := newFixture(t)
		_ = f.api.Close()
		r := f.replica("a", nil).run()
		relaytest.WaitFor(t, 10*time.Second, "a failed reconcile", func() bool { return r.reconciles(ReconcileFailed) >= 1 })
		if err := r.Check(); err == nil || !strings.Contains(err.Error(), "no signing secret known yet") || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Check: got %v, want no secret known, with the API's failure", err)
		}
		if len(r.accepted()) != 0 || r.healthy() != 0 {
			t.Fatalf("got %d secrets and health %v, want none and 0", len(r.accepted()), r.healthy())
		}
	})
	t.Run("stored state: serves meanwhile", func(t *testing.T) {
		f := newFixture(t)
		a := f.replica("a", nil).run()
		id := f.waitRegistered(10*time.Second, a)
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		f.api.FailNextWith(1000, datagridtest.Fault{Status: 503}) // more than this test makes
		b := f.replica("a-restarted", nil).run()
		relaytest.WaitFor(t, 10*time.Second, "a failed reconcile to be counted", func() bool { return b.reconciles(ReconcileFailed) >= 1 })
		if !b.acceptsOnly(f.api.Secret(id)) || b.Check() != nil {
			t.Fatalf("while the API fails: accepted %d secrets, Check %v; want the stored secret and ready", len(b.accepted()), b.Check())
		}
		if b.healthy() != 0 {
			t.Error("registration_healthy should be 0 while the API fails")
		}
	})
}

// TestRotation rotates while a replica runs: both secrets are accepted
// for the grace period, a second rotation inside it is refused, and after
// it the old webhook is deleted and its secret refused.
func TestRotation(t *testing.T) {
	f := newFixture(t)
	a := f.replica("a", nil).run()
	old := f.waitRegistered(10*time.Second, a)
	oldSecret := f.api.Secret(old)

	cli := f.replica("cli", nil) // what relay rotate runs
	st, err := cli.Rotate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Previous == nil || st.Previous.WebhookID != old || st.WebhookID == old || st.Secret != f.api.Secret(st.WebhookID) {
		t.Fatalf("rotated state: got %s, want a new webhook with %s as previous", st.Summary(), old)
	}
	relaytest.WaitFor(t, 5*time.Second, "both secrets accepted", func() bool { return a.acceptsOnly(oldSecret, st.Secret) })
	if _, err := cli.Rotate(context.Background()); err == nil || !strings.Contains(err.Error(), "still in its grace period") {
		t.Fatalf("second rotation: got %v, want a refusal during the grace period", err)
	}
	// A replica (re)started during the grace period takes both from the
	// store, and creates nothing.
	c := f.replica("c", nil).run()
	relaytest.WaitFor(t, 5*time.Second, "a replica started during the grace to accept both secrets", func() bool {
		return c.acceptsOnly(oldSecret, st.Secret)
	})
	base := a.reconciles(ReconcileOK)
	relaytest.WaitFor(t, 5*time.Second, "reconciles during the grace period", func() bool { return a.reconciles(ReconcileOK) >= base+3 })
	if _, ok := f.api.Webhook(old); !ok || !a.acceptsOnly(oldSecret, st.Secret) || !c.acceptsOnly(oldSecret, st.Secret) {
		t.Fatal("the previous webhook or its secret went before the grace period ended")
	}
	if n := f.creates(); n != 2 {
		t.Fatalf("creates: got %d, want 2 (the registration and the rotation)", n)
	}

	f.clock.advance(time.Minute)
	relaytest.WaitFor(t, 5*time.Second, "the old webhook to be deleted after the grace", func() bool {
		_, ok := f.api.Webhook(old)
		return !ok
	})
	if !a.acceptsOnly(st.Secret) || !c.acceptsOnly(st.Secret) {
		t.Fatal("the old secret is still accepted after the grace")
	}
	relaytest.WaitFor(t, 5*time.Second, "the previous webhook to leave the state", func() bool { return f.stored().Previous == nil })
	if id := f.onlyWebhook(); id != st.WebhookID {
		t.Fatalf("webhook for our URL: got %s, want the rotated %s", id, st.WebhookID)
	}
}

// TestDeregister is the uninstall: relay deregister deletes our webhooks
// and leaves a marker without secrets; a replica running meanwhile stops
// registering; one started after the marker registers anew.
func TestDeregister(t *testing.T) {
	f := newFixture(t)
	a := f.replica("a", nil).run()
	f.waitRegistered(10*time.Second, a)
	unrelated, _ := f.api.Seed("https://other.example.com/hook", []string{"batch_prediction.failed"}, true)

	ids, err := f.replica("cli", nil).Deregister(context.Background())
	if err != nil || len(ids) != 1 {
		t.Fatalf("deregister: got %v %v, want one webhook deleted", ids, err)
	}
	if left := f.ours(); len(left) != 0 {
		t.Fatalf("webhooks left for our URL: %v", left)
	}
	if _, ok := f.api.Webhook(unrelated); !ok {
		t.Fatal("deregister deleted an unrelated webhook")
	}
	if st := f.stored(); st.Deregistered == nil || st.Secret != "" || st.Previous != nil || st.WebhookID != "" {
		t.Fatalf("state after deregister: got %s; want the uninstall marker and no secret", st.Summary())
	}
	// The secrets are gone from the bucket, history included.
	kv, err := f.js.KeyValue(context.Background(), testBucket)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := kv.History(context.Background(), stateKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if strings.Contains(string(e.Value()), "whsec_") || !strings.Contains(string(e.Value()), `"deregistered"`) {
			t.Fatalf("registration history holds %s; want only the marker, without secrets", e.Value())
		}
	}

	t.Run("a running replica stops registering", func(t *testing.T) {
		relaytest.WaitFor(t, 10*time.Second, "the running replica to drop its secret and say why", func() bool {
			err := a.Check()
			return len(a.accepted()) == 0 && err != nil && strings.Contains(err.Error(), "relay deregister")
		})
		creates, base := f.creates(), a.reconciles(ReconcileFailed)
		relaytest.WaitFor(t, 10*time.Second, "reconciles after deregister", func() bool { return a.reconciles(ReconcileFailed) >= base+3 })
		if n := f.creates(); n != creates || len(f.ours()) != 0 {
			t.Fatalf("the running replica registered again after deregister: %d creates, %v", n, f.ours())
		}
		if a.healthy() != 0 {
			t.Error("registration_healthy should be 0 after deregister")
		}
	})
	t.Run("a replica started after the marker registers anew", func(t *testing.T) {
		creates := f.creates()
		b := f.replica("b", nil).run()
		id := f.waitRegistered(10*time.Second, b)
		if n := f.creates(); n != creates+1 {
			t.Fatalf("creates: got %d, want %d", n, creates+1)
		}
		if st := f.stored(); !st.Registered() || st.WebhookID != id || st.Deregistered != nil {
			t.Fatalf("state: got %s, want webhook %s without the marker", st.Summary(), id)
		}
	})
}

// TestBucketDeletedWhileRunning is issue 9's defect 2. Two replicas run;
// the state bucket is deleted behind their back: it is recreated and the
// registration written back, registration_healthy drops to 0 meanwhile,
// and the watches follow the new bucket. Then it is deleted again and one
// replica restarts (a fresh Registrar with nothing in memory), which may
// create a new webhook and delete the old one: the replica that did not
// restart must follow the store within a few sync intervals. Before the fix
// the bucket handle was cached and the watch died silently: nothing was
// recreated and the replica that did not restart kept the old secret for
// good, with registration_healthy 1.
func TestBucketDeletedWhileRunning(t *testing.T) {
	f := newFixture(t)
	slow := func(c *Config) { c.ReconcileInterval = time.Minute } // only the sync's kicks wake a reconcile
	ctx := context.Background()
	// Registered before the replicas start, so that their first reconciles
	// find it, and nothing but the sync can wake their next ones: a sync
	// that found nothing while a replica registered would leave a kick
	// behind, and a reconcile woken by it could write the state back
	// before any sync noticed the loss.
	if _, err := f.replica("setup", slow).Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := f.replica("a", slow).run(), f.replica("b", slow).run()
	first := f.waitRegistered(10*time.Second, a, b)
	relaytest.WaitFor(t, 5*time.Second, "both replicas healthy", func() bool { return a.healthy() == 1 && b.healthy() == 1 })

	t.Run("restored", func(t *testing.T) {
		a.health.forget()
		b.health.forget()
		deleted := f.clock.now()
		if err := f.js.DeleteKeyValue(ctx, testBucket); err != nil {
			t.Fatal(err)
		}
		// Written back after the delete: the old state may still be read
		// for a moment after DeleteKeyValue returns.
		relaytest.WaitFor(t, 5*time.Second, "the registration to be back in a recreated bucket", func() bool {
			st, _, err := f.store.Load(ctx)
			return err == nil && st.Registered() && st.UpdatedAt.After(deleted)
		})
		if st := f.stored(); st.WebhookID != first {
			t.Fatalf("state: got %s, want %s written back", st.Summary(), first)
		}
		if !a.health.saw(0) && !b.health.saw(0) {
			t.Error("registration_healthy never dropped to 0 while the store had no registration")
		}
		relaytest.WaitFor(t, 5*time.Second, "both replicas healthy again", func() bool { return a.healthy() == 1 && b.healthy() == 1 })
		if n := f.creates(); n != 1 {
			t.Errorf("creates: got %d, want 1 (the registration was written back, not replaced)", n)
		}
		// The watches follow the recreated bucket: a rotation reaches
		// both through them.
		st, err := f.replica("cli", nil).Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, rev, err := f.store.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Usually at once; a watch that failed repeatedly while the bucket
		// was gone may first sit out its backoff (up to 10s), while the
		// sync keeps the keyring right meanwhile.
		relaytest.WaitFor(t, 15*time.Second, "both watches to deliver the rotation", func() bool {
			return a.watchRev.Load() == rev && b.watchRev.Load() == rev
		})
		relaytest.WaitFor(t, 5*time.Second, "both replicas to accept both secrets", func() bool {
			return a.acceptsOnly(st.Secret, f.api.Secret(first)) && b.acceptsOnly(st.Secret, f.api.Secret(first))
		})
	})

	t.Run("replaced by a restarted replica", func(t *testing.T) {
		if err := b.stop(); err != nil {
			t.Fatal(err)
		}
		before := f.stored()
		if err := f.js.DeleteKeyValue(ctx, testBucket); err != nil {
			t.Fatal(err)
		}
		restarted := f.replica("b-restarted", slow)
		outcome, err := restarted.Reconcile(ctx) // at once, before a's sync can write the state back
		t.Logf("the restarted replica's first reconcile: %q %v", outcome, err)
		restarted.run()
		// Both follow the store within a few sync intervals, whoever won.
		var now State
		relaytest.WaitFor(t, 5*time.Second, "both replicas to hold exactly the secrets the store names", func() bool {
			now = f.stored()
			if !now.Registered() || f.api.Secret(now.WebhookID) != now.Secret {
				return false
			}
			want := []string{now.Secret}
			if p := now.Previous; p != nil {
				want = append(want, p.Secret)
			}
			return a.acceptsOnly(want...) && restarted.acceptsOnly(want...)
		})
		t.Logf("before: %s; after: %s", before.Summary(), now.Summary())
		for _, id := range f.ours() {
			if !now.names(id) {
				t.Errorf("webhook %s for our URL is not named by the stored state", id)
			}
		}
		relaytest.WaitFor(t, 5*time.Second, "both replicas healthy", func() bool { return a.healthy() == 1 && restarted.healthy() == 1 })
	})
}

// TestReconcileKeepsTheWebhookRotateJustCreated is issue 9's defect 3: a
// rotation that lands while a reconcile waits for the list call (slowed
// here to widen the window) must not be taken for a stray. Before the fix
// the reconcile judged strays by the state it loaded before the list,
// deleted the new webhook, and the next reconcile emptied the keyring and
// deleted the old webhook before its grace ended.
func TestReconcileKeepsTheWebhookRotateJustCreated(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r := f.replica("a", nil)
	if _, err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	old := f.onlyWebhook()
	oldSecret := f.api.Secret(old)

	const listLatency = time.Second
	f.api.ResetRequests()
	f.api.SetLatencyFor("GET", "/v1/webhooks", listLatency)
	type result struct {
		outcome Outcome
		err     error
	}
	reconciled := make(chan result, 1)
	go func() {
		o, err := r.Reconcile(ctx)
		reconciled <- result{o, err}
	}()
	inFlight := func() bool {
		for _, req := range f.api.Requests() {
			if req.Method == "GET" && req.Path == "/v1/webhooks" && req.Status == 0 {
				return true
			}
		}
		return false
	}
	relaytest.WaitFor(t, 5*time.Second, "the reconcile's list call", inFlight)
	rotated, err := f.replica("cli", nil).Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !inFlight() {
		t.Fatalf("the rotation did not land while the list call was in flight (%s): the test proves nothing", listLatency)
	}
	res := <-reconciled
	f.api.SetLatencyFor("GET", "/v1/webhooks", 0)
	if res.err != nil {
		t.Fatalf("reconcile: %v", res.err)
	}
	if _, ok := f.api.Webhook(rotated.WebhookID); !ok {
		t.Fatal("the reconcile deleted the webhook the rotation had just created")
	}

	// The next reconciles keep both until the grace ends.
	for range 2 {
		if _, err := r.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if !r.acceptsOnly(oldSecret, rotated.Secret) {
			t.Fatal("the keyring lost a secret during the grace period")
		}
		for _, id := range []string{old, rotated.WebhookID} {
			if _, ok := f.api.Webhook(id); !ok {
				t.Fatalf("webhook %s was deleted during the grace period", id)
			}
		}
	}
	f.clock.advance(rotated.Previous.ExpiresAt.Sub(f.clock.now()) - time.Second)
	if _, err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.api.Webhook(old); !ok || !r.acceptsOnly(oldSecret, rotated.Secret) {
		t.Fatal("the previous webhook or its secret went a second before its grace ended")
	}
	f.clock.advance(time.Second)
	if !r.acceptsOnly(rotated.Secret) {
		t.Fatal("the previous secret is still accepted after its grace")
	}
	if _, err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if id := f.onlyWebhook(); id != rotated.WebhookID {
		t.Fatalf("after the grace: got webhook %s, want only the rotated %s", id, rotated.WebhookID)
	}
	if st := f.stored(); st.WebhookID != rotated.WebhookID || st.Previous != nil {
		t.Fatalf("after the grace: got %s, want the rotated webhook alone", st.Summary())
	}
}

// TestIncompleteCreateAnswerIsAnError is issue 9's defect 4: a 2xx create
// answer without the secret (or the id) is a failure, not a registration.
// Before the fix it was stored as one with an empty secret, reported
// healthy, and replaced by a new webhook on every reconcile.
func TestIncompleteCreateAnswerIsAnError(t *testing.T) {
	t.Run("without secret", func(t *testing.T) {
		f := newFixture(t)
		f.api.OmitFromCreate("secret")
		r := f.replica("a", nil).run()
		// Run counts the failure, then logs it.
		relaytest.WaitFor(t, 10*time.Second, "a failed reconcile, logged", func() bool {
			return r.reconciles(ReconcileFailed) >= 1 && strings.Contains(r.logText(), "registration not reconciled")
		})
		err := r.Check()
		if err == nil || !strings.Contains(err.Error(), "without secret") {
			t.Fatalf("Check: got %v, want not ready, naming the missing secret", err)
		}
		if r.healthy() != 0 || r.reconciles(ReconcileOK)+r.reconciles(ReconcileRepaired) != 0 {
			t.Fatalf("got health %v and %v successful reconciles, want 0 and 0", r.healthy(), r.reconciles(ReconcileOK)+r.reconciles(ReconcileRepaired))
		}
		if !strings.Contains(r.logText(), "the API answered success without secret") {
			t.Error("the failure is not logged with what the API left out")
		}
		if left := f.ours(); len(left) != 0 || f.creates() == 0 {
			t.Fatalf("webhooks for our URL: got %v after %d creates, want the partial ones deleted", left, f.creates())
		}
		if st := f.stored(); st.Registered() || st.Pending != nil || st.Secret != "" {
			t.Fatalf("state: got %s, want nothing registered and no claim left", st.Summary())
		}
	})
	t.Run("without id", func(t *testing.T) {
		f := newFixture(t)
		f.api.OmitFromCreate("id")
		r := f.replica("a", nil)
		if _, err := r.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "without id") {
			t.Fatalf("reconcile: got %v, want an error naming the missing id", err)
		}
		if len(r.accepted()) != 0 || f.stored().Registered() {
			t.Fatal("an answer without id was taken as a registration")
		}
		// The webhook it made cannot be named; the next registration finds
		// it by URL and deletes it.
		f.api.OmitFromCreate()
		if _, err := r.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if id := f.onlyWebhook(); id != f.stored().WebhookID {
			t.Fatalf("webhook for our URL: got %s, want the registered %s", id, f.stored().WebhookID)
		}
	})
}

// TestCreatesAreBudgeted: whatever the API answers, a registrar creates at
// most Config.MaxCreates webhooks per window. Here every create is answered
// 201 without a secret, and the registrar reconciles over and over.
func TestCreatesAreBudgeted(t *testing.T) {
	f := newFixture(t)
	f.api.OmitFromCreate("secret")
	r := f.replica("a", func(c *Config) { c.MaxCreates = 3 })
	ctx := context.Background()
	var budget *createBudgetError
	for i := range 20 {
		_, err := r.Reconcile(ctx)
		if err == nil {
			t.Fatalf("reconcile %d: got success from answers without secret", i)
		}
		if i >= 3 && !errors.As(err, &budget) {
			t.Fatalf("reconcile %d: got %v, want the create budget's refusal", i, err)
		}
	}
	if n := f.creates(); n != 3 {
		t.Fatalf("creates: got %d over 20 reconciles, want 3 (MaxCreates)", n)
	}
	if left := f.ours(); len(left) != 0 {
		t.Fatalf("webhooks left for our URL: %v", left)
	}
	if !strings.Contains(budget.Error(), "create budget spent") {
		t.Fatalf("budget error: got %q", budget.Error())
	}

	// Run waits for the budget instead of spinning: it does not create
	// again within the window, and says why it is not ready.
	r2 := f.replica("b", func(c *Config) { c.MaxCreates = 2 }).run()
	relaytest.WaitFor(t, 10*time.Second, "the budget to be spent", func() bool {
		err := r2.Check()
		return err != nil && strings.Contains(err.Error(), "create budget spent")
	})
	if n := f.creates(); n != 3+2 {
		t.Fatalf("creates: got %d, want 5 (3 + MaxCreates of the running replica)", n)
	}
	if r2.healthy() != 0 {
		t.Fatal("registration_healthy should be 0 while no webhook can be registered")
	}
}

// keyringWatch samples replicas' keyrings until stopped and reports whether
// any of them was ever empty: a replica with an empty keyring refuses every
// delivery (503).
func keyringWatch(rs ...*replica) (stop func() (emptied bool)) {
	var emptied atomic.Bool
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			for _, r := range rs {
				if len(r.Keyring().Accepted()) == 0 {
					emptied.Store(true)
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() bool {
		close(done)
		<-stopped
		return emptied.Load()
	}
}

// TestClaimsKeepTheSecrets: while a replica re-registers (the webhook was
// deleted at Datagrid) or relay rotate creates the new webhook, the claim in
// the store keeps the current secrets, so no replica's keyring is emptied
// meanwhile; the creates are slowed to widen the window. Before the fix
// (issue 9, defect 3) a claim held no secret and emptied every replica's
// keyring until the new webhook was stored: 503 for every delivery.
func TestClaimsKeepTheSecrets(t *testing.T) {
	f := newFixture(t)
	a, b := f.replica("a", nil).run(), f.replica("b", nil).run()
	first := f.waitRegistered(10*time.Second, a, b)
	f.api.SetLatencyFor("POST", "/v1/webhooks", 500*time.Millisecond)

	t.Run("re-registration", func(t *testing.T) {
		stop := keyringWatch(a, b)
		f.api.Remove(first)
		relaytest.WaitFor(t, 10*time.Second, "a claim while the new webhook is created", func() bool {
			return f.stored().Pending != nil
		})
		second := f.waitRegistered(10*time.Second, a, b)
		if stop() {
			t.Error("a replica's keyring was empty while the webhook was re-registered")
		}
		if second == first || f.creates() != 2 {
			t.Fatalf("got webhook %s after %d creates, want a new one after 2", second, f.creates())
		}
	})
	t.Run("rotation", func(t *testing.T) {
		current := f.onlyWebhook()
		stop := keyringWatch(a, b)
		rotated := make(chan State, 1)
		go func() {
			st, err := f.replica("cli", nil).Rotate(context.Background())
			if err != nil {
				t.Error(err)
			}
			rotated <- st
		}()
		relaytest.WaitFor(t, 10*time.Second, "the rotation's claim", func() bool { return f.stored().Pending != nil })
		st := <-rotated
		relaytest.WaitFor(t, 5*time.Second, "both replicas to accept both secrets", func() bool {
			return a.acceptsOnly(st.Secret, f.api.Secret(current)) && b.acceptsOnly(st.Secret, f.api.Secret(current))
		})
		if stop() {
			t.Error("a replica's keyring was empty during the rotation")
		}
		if n := f.creates(); n != 3 {
			t.Fatalf("creates: got %d, want 3 (the replicas created none of their own during the rotation)", n)
		}
	})
}
