package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/signature"
)

// The fault suites: NATS killed under load, a cluster's stream leader lost
// under load, the stream lost at runtime, and streams the relay must refuse
// to adopt. The promise they check is the contract's: a 2xx means the event
// is stored exactly once, every other answer to a valid delivery is a 503
// with Retry-After (never a reset, never another status), and a delivery
// retried as Datagrid does is stored exactly once in the end.

// deliveryAnswer is what the relay said to one delivery.
type deliveryAnswer struct {
	status     int
	retryAfter string
	err        error // the relay did not answer: reset, timeout, ...
}

// sendEvent posts a freshly signed delivery of event id to url with c.
func sendEvent(c *http.Client, url, id string) deliveryAnswer {
	body := relaytest.Envelope(id, "batch_prediction.completed")
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return deliveryAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(signature.Header, signature.Sign([]byte(secret), time.Now().Unix(), body))
	resp, err := c.Do(req)
	if err != nil {
		return deliveryAnswer{err: err}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return deliveryAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
}

// loadRun sends deliveries of distinct event ids from several workers, each id
// once, and records every answer. Everything it sees that breaks the
// promise is a test error.
type loadRun struct {
	t    *testing.T
	url  string
	c    *http.Client
	stop atomic.Bool
	wg   sync.WaitGroup

	mu       sync.Mutex
	sent     []string
	stored   map[string]bool // answered 2xx
	refused  int             // answered 503 with Retry-After
	failures []string        // anything else
}

// startLoad starts workers sending distinct ids prefixed with prefix to url,
// each at most maxPerWorker ids and for at most a minute, until stop.
func startLoad(t *testing.T, url, prefix string, workers, maxPerWorker int) *loadRun {
	l := &loadRun{t: t, url: url, stored: map[string]bool{},
		c: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}}
	deadline := time.Now().Add(time.Minute)
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; i < maxPerWorker && !l.stop.Load() && time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("%s_w%d_%d", prefix, w, i)
				a := sendEvent(l.c, url, id)
				if !l.record(id, a) {
					// Pace refusals a little, as Datagrid does not hammer
					// a relay that answers 503: fewer ids to resend.
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

// record notes one answer and reports whether it was a 2xx.
func (l *loadRun) record(id string, a deliveryAnswer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, id)
	switch {
	case a.err != nil:
		l.failures = append(l.failures, fmt.Sprintf("%s: no answer from the relay: %v", id, a.err))
	case a.status == http.StatusOK:
		l.stored[id] = true
		return true
	case a.status == http.StatusServiceUnavailable && a.retryAfter != "":
		l.refused++
	default:
		l.failures = append(l.failures, fmt.Sprintf("%s: got %d (Retry-After %q), want 200 or 503 with Retry-After", id, a.status, a.retryAfter))
	}
	return false
}

func (l *loadRun) halt() { l.stop.Store(true); l.wg.Wait() }

func (l *loadRun) counts() (stored, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.stored), l.refused
}

// waitStored waits until at least n more deliveries than now got a 2xx.
func (l *loadRun) waitStored(within time.Duration, n int, what string) {
	l.t.Helper()
	before, _ := l.counts()
	relaytest.WaitFor(l.t, within, what, func() bool { s, _ := l.counts(); return s >= before+n })
}

// finish stops the load, checks that every id answered 2xx is stored exactly
// once, then resends every other id until it is answered 2xx (as Datagrid
// retries) and checks that every id sent is stored exactly once, nothing
// else. natsURL reaches the stream.
func (l *loadRun) finish(natsURL string) {
	t := l.t
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, f := range l.failures {
		if i == 10 {
			t.Errorf("... and %d more", len(l.failures)-10)
			break
		}
		t.Error(f)
	}
	t.Logf("load: %d ids sent, %d answered 2xx, %d answers 503 with Retry-After", len(l.sent), len(l.stored), l.refused)

	ids := streamMsgIDs(t, natsURL)
	var pending []string
	for _, id := range l.sent {
		switch n := ids[id]; {
		case l.stored[id] && n != 1:
			t.Errorf("event %s answered 2xx is stored %d times, want exactly once", id, n)
		case n > 1:
			t.Errorf("event %s is stored %d times, want at most once", id, n)
		}
		if !l.stored[id] {
			pending = append(pending, id)
		}
	}

	// Datagrid retries every delivery that did not get a 2xx.
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Int32
	deadline := time.Now().Add(30 * time.Second)
	for range 4 {
		wg.Go(func() {
			for id := range work {
				for {
					a := sendEvent(l.c, l.url, id)
					if a.err == nil && a.status == http.StatusOK {
						break
					}
					if a.err != nil || a.status != http.StatusServiceUnavailable || a.retryAfter == "" || time.Now().After(deadline) {
						if failed.Add(1) <= 10 {
							t.Errorf("resending %s: got %d (Retry-After %q) %v, want 200", id, a.status, a.retryAfter, a.err)
						}
						break
					}
					time.Sleep(50 * time.Millisecond) // the next retry, sooner than Retry-After
				}
			}
		})
	}
	for _, id := range pending {
		work <- id
	}
	close(work)
	wg.Wait()
	t.Logf("resent %d ids", len(pending))

	ids = streamMsgIDs(t, natsURL)
	for _, id := range l.sent {
		if ids[id] != 1 {
			t.Errorf("event %s is stored %d times after Datagrid's retries, want exactly once", id, ids[id])
		}
	}
	if len(ids) != len(l.sent) {
		t.Errorf("stream holds %d distinct ids, want the %d sent", len(ids), len(l.sent))
	}
}

// TestNATSKilledUnderLoad shuts the NATS server down while many workers
// stream deliveries and starts it again on the same store and port.
func TestNATSKilledUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, natstest.Options(dir))
	port := natstest.Port(ns)
	r := start(t, ns.ClientURL(), nil, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)

	l := startLoad(t, r.delivery, "evt_kill", 8, 5000)
	l.waitStored(20*time.Second, 50, "deliveries stored before the kill")

	ns.Shutdown()
	ns.WaitForShutdown()
	_, refusedBefore := l.counts()
	relaytest.WaitFor(t, 10*time.Second, "deliveries refused while NATS is down", func() bool {
		_, refused := l.counts()
		return refused >= refusedBefore+20
	})
	ready, _ := relaytest.Get(r.admin + "/readyz")
	if ready.Status != 503 || !strings.Contains(ready.Body, "nats") {
		t.Errorf("readyz while NATS is down: got %d %q, want 503 naming nats", ready.Status, ready.Body)
	}

	opts := natstest.Options(dir)
	opts.Port = port
	natstest.Start(t, opts)
	relaytest.WaitStatus(t, 20*time.Second, r.admin+"/readyz", 200)
	l.waitStored(20*time.Second, 50, "deliveries stored after the restart")
	l.finish(fmt.Sprintf("nats://127.0.0.1:%d", port))
}

// streamLeader returns the name of the server leading the stream.
func streamLeader(t *testing.T, js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "DATAGRID")
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// replicasCurrent reports whether the stream has a leader and every replica
// is online and caught up.
func replicasCurrent(js jetstream.JetStream, want int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "DATAGRID")
	if err != nil {
		return false
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != want-1 {
		return false
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

// TestClusterLeaderLostUnderLoad shuts down the server leading an R3 stream
// while deliveries stream in, then brings it back on its own store.
func TestClusterLeaderLostUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("three NATS servers and a leader election: run without -short (.ci/run does)")
	}
	c := natstest.StartCluster(t, 3)
	url := c.URL()
	r := start(t, url, map[string]string{"RELAY_STREAM_REPLICAS": "3", "RELAY_PUBLISH_TIMEOUT": "2s"}, nil)
	relaytest.WaitStatus(t, 30*time.Second, r.admin+"/readyz", 200)
	js := natstest.JetStream(t, url)
	relaytest.WaitFor(t, 30*time.Second, "three current replicas", func() bool { return replicasCurrent(js, 3) })

	l := startLoad(t, r.delivery, "evt_leader", 6, 5000)
	l.waitStored(20*time.Second, 50, "deliveries stored before the leader is lost")

	leader := streamLeader(t, js)
	i := c.Index(leader)
	if i < 0 {
		t.Fatalf("stream leader %q is not a node of the cluster", leader)
	}
	c.Stop(i)
	relaytest.WaitFor(t, 30*time.Second, "a new stream leader", func() bool {
		l := streamLeader(t, js)
		return l != "" && l != leader
	})
	l.waitStored(30*time.Second, 50, "deliveries stored under the new leader")

	c.Restart(t, i)
	relaytest.WaitFor(t, 30*time.Second, "the old leader back and caught up", func() bool { return replicasCurrent(js, 3) })
	l.waitStored(20*time.Second, 30, "deliveries stored with the old leader back")
	l.finish(url)
}

// TestStreamLostWhileTwoRelaysRun deletes the stream under two running
// relays: both recreate it without a restart, with no valid delivery
// refused for more than a few seconds. Then the stream is replaced by one
// the relays cannot work with: /readyz says why and deliveries get 503
// until it is gone, and both recover on their own.
func TestStreamLostWhileTwoRelaysRun(t *testing.T) {
	ns := natstest.Start(t, nil)
	relays := []*relay{start(t, ns.ClientURL(), nil, nil), start(t, ns.ClientURL(), nil, nil)}
	for _, r := range relays {
		relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	}
	js := natstest.JetStream(t, ns.ClientURL())
	ctx := context.Background()

	// One Datagrid-like sender per relay: each event is retried until a
	// 2xx; the longest run of refusals is what the promise bounds.
	client := &http.Client{Timeout: 15 * time.Second}
	p := startPatient(t, len(relays), 2000, false, "evt_lost", func(k int, id string) try {
		a := sendEvent(client, relays[k].delivery, id)
		return try{
			stored:  a.err == nil && a.status == 200,
			retry:   a.err == nil && a.status == 503 && a.retryAfter != "",
			refused: true,
			what:    fmt.Sprintf("got %d (Retry-After %q) %v", a.status, a.retryAfter, a.err),
		}
	})

	relaytest.WaitFor(t, 10*time.Second, "deliveries before the stream is lost", func() bool { return p.storedCount() >= 20 })
	if err := js.DeleteStream(ctx, "DATAGRID"); err != nil {
		t.Fatal(err)
	}
	deletedAt := p.storedCount()
	relaytest.WaitFor(t, 20*time.Second, "deliveries stored again on both relays", func() bool { return p.storedCount() >= deletedAt+40 })
	_, longest, problems := p.halt()
	for _, p := range problems {
		t.Errorf("valid delivery not retried to success: %s", p)
	}
	if longest > 5*time.Second {
		t.Errorf("a valid delivery was refused for %s after the stream was deleted, want at most 5s", longest)
	}
	t.Logf("longest refusal of a valid delivery: %s", longest)
	s, err := js.Stream(ctx, "DATAGRID")
	if err != nil {
		t.Fatalf("stream not recreated: %v", err)
	}
	if subj := s.CachedInfo().Config.Subjects; len(subj) != 1 || subj[0] != "datagrid.>" {
		t.Errorf("recreated stream captures %v, want [datagrid.>]", subj)
	}

	// The stream replaced by one that takes its subjects: nothing the
	// relays can create; they say so and refuse deliveries until it goes.
	// The relays re-check every few seconds and may recreate DATAGRID
	// between the delete and the create, as they should: the operator then
	// tries again.
	relaytest.WaitFor(t, 20*time.Second, "SQUATTER in DATAGRID's place", func() bool {
		if err := js.DeleteStream(ctx, "DATAGRID"); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return false
		}
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"datagrid.>"}})
		return err == nil
	})
	// A delivery that finds the stream gone makes the relay look at once:
	// /readyz must not stay 200 until the next periodic check.
	for k, r := range relays {
		a := sendEvent(http.DefaultClient, r.delivery, fmt.Sprintf("evt_squatted_%d", k))
		if a.status != 503 || a.retryAfter == "" {
			t.Errorf("relay %d: delivery without its stream: got %d (Retry-After %q) %v, want 503 with Retry-After", k, a.status, a.retryAfter, a.err)
		}
		var got relaytest.Response
		relaytest.WaitFor(t, 2*time.Second, fmt.Sprintf("relay %d's readyz to say the stream is missing", k), func() bool {
			got, _ = relaytest.Get(r.admin + "/readyz")
			return got.Status == 503 && strings.Contains(got.Body, "stream: ") && strings.Contains(got.Body, "DATAGRID")
		})
		t.Logf("relay %d readyz: %d %q", k, got.Status, got.Body)
	}
	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	for k, r := range relays {
		relaytest.WaitStatus(t, 15*time.Second, r.admin+"/readyz", 200)
		if a := sendEvent(http.DefaultClient, r.delivery, fmt.Sprintf("evt_squatted_%d", k)); a.status != 200 {
			t.Errorf("relay %d after recovery: got %d %v, want 200", k, a.status, a.err)
		}
	}
	ids := streamMsgIDs(t, ns.ClientURL())
	if ids["evt_squatted_0"] != 1 || ids["evt_squatted_1"] != 1 {
		t.Errorf("deliveries after recovery stored %d and %d times, want once each", ids["evt_squatted_0"], ids["evt_squatted_1"])
	}
}

// metricValue returns the value of the sample named exactly series (name and
// labels, as exposed) in a /metrics answer, or -1 when absent.
func metricValue(metrics, series string) float64 {
	for line := range strings.SplitSeq(metrics, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

var outcomeSample = regexp.MustCompile(`^datagrid_relay_deliveries_total\{[^}]*outcome="([a-z_]+)"[^}]*\} ([0-9.e+]+)$`)

// scrape returns the relay's /metrics, uncompressed: gzip makes a scrape
// several times slower under the race detector, and the catalogue scrapes
// once per row.
func scrape(admin string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept-Encoding", "identity")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return string(b), err
}

// outcomes sums datagrid_relay_deliveries_total by outcome, and counts
// requests for unknown paths as outcome "unknown_path".
func outcomes(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	m, err := scrape(admin)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for line := range strings.SplitSeq(m, "\n") {
		if !strings.HasPrefix(line, "datagrid_relay_deliveries_total{") {
			continue
		}
		if s := outcomeSample.FindStringSubmatch(line); s != nil {
			v, _ := strconv.ParseFloat(s[2], 64)
			sums[s[1]] += v
		}
	}
	sums["unknown_path"] = metricValue(m, "datagrid_relay_unknown_path_requests_total")
	return sums
}

// padded is a valid envelope of exactly size bytes.
func padded(id string, size int) []byte {
	head := fmt.Sprintf(`{"id":%q,"event_type":"batch_prediction.completed","timestamp":%d,"data":{"pad":"`, id, time.Now().Unix())
	tail := `"}}`
	n := size - len(head) - len(tail)
	if n < 0 {
		panic("padded: size too small")
	}
	return []byte(head + strings.Repeat("x", n) + tail)
}

// TestRefusesToAdoptStreamsThatBreakThePromise pre-creates the stream with
// each setting that would make a 2xx a lie: the relay adopts none of them,
// /readyz says why, deliveries get 503 and nothing is stored.
func TestRefusesToAdoptStreamsThatBreakThePromise(t *testing.T) {
	base := jetstream.StreamConfig{Name: "DATAGRID", Subjects: []string{"datagrid.>"}, Duplicates: 24 * time.Hour}
	for _, tc := range []struct {
		name   string
		change func(*jetstream.StreamConfig)
		reason string
	}{
		{"interest retention", func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }, "interest retention"},
		{"max_msgs_per_subject 1", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, "max_msgs_per_subject 1"},
		{"no_ack", func(c *jetstream.StreamConfig) { c.NoAck = true }, "no_ack"},
		{"duplicate window under the tolerance", func(c *jetstream.StreamConfig) { c.Duplicates = time.Second }, "duplicate window 1s is shorter than RELAY_SIGNATURE_TOLERANCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.Start(t, nil)
			js := natstest.JetStream(t, ns.ClientURL())
			cfg := base
			tc.change(&cfg)
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			r := start(t, ns.ClientURL(), nil, nil)
			relaytest.WaitFor(t, 10*time.Second, "readyz to give the reason", func() bool {
				got, _ := relaytest.Get(r.admin + "/readyz")
				return got.Status == 503 && strings.Contains(got.Body, "cannot be adopted") && strings.Contains(got.Body, tc.reason)
			})
			for _, id := range []string{"evt_adopt_1", "evt_adopt_2"} {
				if a := sendEvent(http.DefaultClient, r.delivery, id); a.status != 503 || a.retryAfter == "" {
					t.Errorf("delivery %s: got %d (Retry-After %q) %v, want 503 with Retry-After", id, a.status, a.retryAfter, a.err)
				}
			}
			s, err := js.Stream(ctx, "DATAGRID")
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != 0 || info.State.LastSeq != 0 {
				t.Errorf("stream holds %d messages (last seq %d), want none", info.State.Msgs, info.State.LastSeq)
			}
			if got := outcomes(t, r.admin)["unavailable"]; got != 2 {
				t.Errorf("unavailable outcomes: got %v, want 2", got)
			}
		})
	}
}

// TestAdoptedStreamMaxMsgSizeLowersTheLimit adopts a stream whose
// max_msg_size is below the body limit: the limit in force drops to it (less
// header room), a body over it is refused 413 and never 503, a body at it is
// stored.
func TestAdoptedStreamMaxMsgSizeLowersTheLimit(t *testing.T) {
	ns := natstest.Start(t, nil)
	js := natstest.JetStream(t, ns.ClientURL())
	ctx := context.Background()
	const maxMsgSize = 64 << 10
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DATAGRID", Subjects: []string{"datagrid.>"},
		Duplicates: 24 * time.Hour, MaxMsgSize: maxMsgSize}); err != nil {
		t.Fatal(err)
	}
	r := start(t, ns.ClientURL(), nil, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	limit := maxMsgSize - 4096 // publish.HeaderRoom
	m, _ := scrape(r.admin)
	if got := metricValue(m, "datagrid_relay_delivery_body_limit_bytes"); got != float64(limit) {
		t.Fatalf("datagrid_relay_delivery_body_limit_bytes: got %v, want %d", got, limit)
	}
	for _, tc := range []struct {
		id     string
		size   int
		status int
	}{
		{"evt_size_over_stream", limit + 1, 413},
		{"evt_size_far_over", 200 << 10, 413},
		{"evt_size_at_limit", limit, 200},
		{"evt_size_small", 1000, 200},
	} {
		body := padded(tc.id, tc.size)
		resp, err := relaytest.Post(r.delivery, secret, body)
		if err != nil || resp.Status != tc.status {
			t.Errorf("%s (%d bytes): got %d %q %v, want %d", tc.id, tc.size, resp.Status, resp.Body, err, tc.status)
		}
		if tc.status == 413 && resp.Body != fmt.Sprintf(`{"error":"body larger than %d bytes"}`+"\n", limit) {
			t.Errorf("%s: answer %q, want the limit named", tc.id, resp.Body)
		}
	}
	ids := streamMsgIDs(t, ns.ClientURL())
	if ids["evt_size_at_limit"] != 1 || ids["evt_size_small"] != 1 || len(ids) != 2 {
		t.Errorf("stored ids %v, want evt_size_at_limit and evt_size_small once each", ids)
	}
	o := outcomes(t, r.admin)
	if o["too_large"] != 2 || o["unavailable"] != 0 || o["published"] != 2 {
		t.Errorf("outcomes: too_large %v, unavailable %v, published %v; want 2, 0, 2", o["too_large"], o["unavailable"], o["published"])
	}
}

// TestStateBucketLostWhileTwoRelaysRun deletes the key-value bucket under
// two relays that register themselves with the (fake) Datagrid API, then
// restarts one of them, which finds no state and repairs the registration.
// The relay that did not restart must follow: Datagrid signs with whatever
// webhook it has now, and no delivery signed that way is refused by either
// relay for more than a few seconds.
func TestStateBucketLostWhileTwoRelaysRun(t *testing.T) {
	const key, url = "dg_fault_test_key", "https://relay.example.com/webhooks/datagrid"
	ns := natstest.Start(t, nil)
	api, err := datagridtest.Start(datagridtest.Options{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	env := map[string]string{
		"RELAY_WEBHOOK_SECRET": "", "DATAGRID_API_KEY": key, "DATAGRID_BASE_URL": api.URL(),
		// Reconciles far apart enough that the restarted relay, not the one
		// that stays, is the first to find the bucket gone.
		"RELAY_PUBLIC_URL": url, "RELAY_RECONCILE_INTERVAL": "3s",
	}
	stay, restarted := start(t, ns.ClientURL(), env, nil), start(t, ns.ClientURL(), env, nil)
	for _, r := range []*relay{stay, restarted} {
		relaytest.WaitStatus(t, 20*time.Second, r.admin+"/readyz", 200)
	}
	// Datagrid's side: the secret of the one enabled webhook for our URL.
	current := func() (string, bool) {
		var ids []string
		for _, wh := range api.Webhooks() {
			if wh.URL == url && wh.Enabled {
				ids = append(ids, wh.ID)
			}
		}
		if len(ids) != 1 {
			return "", false
		}
		return api.Secret(ids[0]), true
	}

	// Datagrid delivering to the relay that stays up: each event retried
	// until a 2xx, signed with whatever secret Datagrid has at that moment.
	p := startPatient(t, 1, 5000, true, "evt_kv", func(_ int, id string) try {
		s, ok := current()
		if !ok { // Datagrid itself is between two webhooks: nothing is sent
			return try{retry: true, what: "no webhook at Datagrid"}
		}
		resp, err := relaytest.Post(stay.delivery, s, relaytest.Envelope(id, "batch_prediction.completed"))
		return try{
			stored:  err == nil && resp.Status == 200,
			retry:   err == nil && (resp.Status == 401 || resp.Status == 503),
			refused: true,
			what:    fmt.Sprintf("got %d %q %v", resp.Status, resp.Body, err),
		}
	})
	relaytest.WaitFor(t, 10*time.Second, "deliveries before the bucket is lost", func() bool { return p.storedCount() >= 10 })

	js := natstest.JetStream(t, ns.ClientURL())
	if err := js.DeleteKeyValue(context.Background(), "datagrid_relay"); err != nil {
		t.Fatal(err)
	}
	restarted.stop(t)
	again := start(t, ns.ClientURL(), env, nil)
	relaytest.WaitStatus(t, 20*time.Second, again.admin+"/readyz", 200)
	before := p.storedCount()
	relaytest.WaitFor(t, 20*time.Second, "deliveries stored after the restart", func() bool { return p.storedCount() >= before+20 })

	// Both relays accept what Datagrid signs now, and say they are ready.
	relaytest.WaitFor(t, 10*time.Second, "one webhook for our URL at Datagrid", func() bool { _, ok := current(); return ok })
	s, _ := current()
	for k, r := range []*relay{stay, again} {
		resp, err := relaytest.Post(r.delivery, s, relaytest.Envelope(fmt.Sprintf("evt_kv_after_%d", k), "batch_prediction.completed"))
		if err != nil || resp.Status != 200 {
			t.Errorf("relay %d with Datagrid's current secret: got %d %q %v, want 200", k, resp.Status, resp.Body, err)
		}
		if got, _ := relaytest.Get(r.admin + "/readyz"); got.Status != 200 {
			t.Errorf("relay %d readyz: got %d %q, want 200", k, got.Status, got.Body)
		}
	}
	stored, longest, problems := p.halt()
	for _, p := range problems {
		t.Errorf("delivery not retried to success: %s", p)
	}
	t.Logf("%d deliveries stored; longest refusal of a delivery Datagrid signed: %s", stored, longest)
	if longest > 5*time.Second {
		t.Errorf("a delivery signed with Datagrid's current secret was refused for %s, want at most 5s", longest)
	}
}

// patient is Datagrid as the fault tests need it: workers each send events
// of their own in turn and retry every event, 20 ms apart, until the relay
// stores it. It keeps the longest time one event was refused, and as
// problems the answers Datagrid would not retry and the events still
// refused after maxAttempts.
type patient struct {
	stop     atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	stored   int
	longest  time.Duration
	problems []string
}

// try is one attempt at delivering an event: stored, or else whether
// Datagrid would retry, whether the relay refused it (false when nothing
// was sent) and what happened.
type try struct {
	stored, retry, refused bool
	what                   string
}

// startPatient starts workers sending events <prefix>_r<worker>_<n> with
// attempt until halt. With abandon, halt also ends the retries of the
// event in hand; without, each is retried to its end.
func startPatient(t *testing.T, workers, maxAttempts int, abandon bool, prefix string, attempt func(worker int, id string) try) *patient {
	p := &patient{}
	for k := range workers {
		p.wg.Go(func() {
			for i := 0; i < 100000 && !p.stop.Load(); i++ {
				p.deliver(fmt.Sprintf("%s_r%d_%d", prefix, k, i), maxAttempts, abandon, func(id string) try { return attempt(k, id) })
			}
		})
	}
	t.Cleanup(func() { p.halt() })
	return p
}

func (p *patient) deliver(id string, maxAttempts int, abandon bool, attempt func(id string) try) {
	var firstRefusal time.Time
	for n := 0; !abandon || !p.stop.Load(); n++ {
		a := attempt(id)
		if a.stored {
			p.mu.Lock()
			p.stored++
			if !firstRefusal.IsZero() {
				p.longest = max(p.longest, time.Since(firstRefusal))
			}
			p.mu.Unlock()
			return
		}
		if !a.retry || n == maxAttempts {
			p.mu.Lock()
			p.problems = append(p.problems, id+": "+a.what)
			p.mu.Unlock()
			return
		}
		if firstRefusal.IsZero() && a.refused {
			firstRefusal = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *patient) storedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored
}

// halt stops the workers, waits for them and says what they saw.
func (p *patient) halt() (stored int, longest time.Duration, problems []string) {
	p.stop.Store(true)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored, p.longest, p.problems
}
