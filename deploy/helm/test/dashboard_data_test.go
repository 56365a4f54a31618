package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/util/teststorage"
)

// TestDashboardHasData is the "no empty panel" test. It builds the relay,
// runs it against a real in-process NATS server with JetStream (static
// secret) and drives deliveries of every outcome it can produce; it also
// runs `relay demo` (the relay in self-registration mode against the
// built-in Datagrid simulator) for the registration and API panels. It
// scrapes both /metrics several times into a Prometheus TSDB, with the
// labels a ServiceMonitor gives (job, namespace, instance), then evaluates
// every query of every panel with the variables substituted as Grafana
// would, and wants data (a sample that is not NaN) from each.
//
// Set RELAY_BIN to a built relay to skip the build.
func TestDashboardHasData(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay")
	}
	t.Parallel()
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%5.1fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}

	bin := os.Getenv("RELAY_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "relay")
		build := exec.Command("go", "build", "-o", bin, "./cmd/relay")
		build.Dir = "../../.."
		build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/relay: %v\n%s", err, out)
		}
		logf("built %s", bin)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := startNATS(t)
	logf("NATS with JetStream on %s", ns.ClientURL())

	const secret = "whsec_dashboard_data_test"
	const bodyLimit = 64 << 10
	relay := startRelay(ctx, t, bin, true, []string{"serve"}, []string{
		"RELAY_WEBHOOK_SECRET=" + secret,
		"NATS_URL=" + ns.ClientURL(),
		"RELAY_LISTEN_ADDR=127.0.0.1:0",
		"RELAY_ADMIN_ADDR=127.0.0.1:0",
		"RELAY_MAX_BODY_BYTES=" + strconv.Itoa(bodyLimit),
		// Room for the two stalled bodies below (a buffer of the limit
		// each) and 32 KiB more: the 40 KiB delivery of round 2, whose
		// buffer grows to the limit, does not fit beside them.
		"RELAY_MAX_INFLIGHT_BYTES=" + strconv.Itoa(2*bodyLimit+32<<10),
		"RELAY_PUBLISH_TIMEOUT=1s",
		"RELAY_READ_TIMEOUT=30s", // the stalled bodies below must outlast the steps between
		"GOMEMLIMIT=134217728",   // as the chart sets it from the memory limit
		"LOG_FORMAT=json",
	})
	logf("relay: deliveries on %s, admin on %s", relay.public, relay.admin)

	// relay demo: self-registration against the simulator, for the
	// registration and Datagrid API panels.
	demoAdmin := freeAddr(t)
	demo := startRelay(ctx, t, bin, false, []string{"demo", "--admin", demoAdmin, "--rate", "5"}, []string{"LOG_FORMAT=json"})
	demo.admin = demoAdmin

	waitFor(ctx, t, "relay ready", func() error { return getOK(relay.admin + "/readyz") })
	waitFor(ctx, t, "relay demo ready", func() error { return getOK(demo.admin + "/readyz") })
	logf("both ready")

	db := teststorage.New(t)
	var last time.Time
	scrapes := 0
	scrape := func() {
		t.Helper()
		now := time.Now()
		if !now.After(last) {
			now = last.Add(time.Millisecond)
		}
		for _, target := range []*relayProc{relay, demo} {
			if err := scrapeInto(db, target.admin, now); err != nil {
				t.Fatalf("scrape %s: %v", target.admin, err)
			}
		}
		last = now
		scrapes++
	}
	scrape()
	// Before any delivery, the gauges set at start already say what a
	// panel shows (the body limit used to read 0 until a first delivery).
	for _, g := range []struct {
		name   string
		labels map[string]string
	}{
		{"datagrid_relay_delivery_body_limit_bytes", nil},
		{"datagrid_relay_inflight_body_budget_bytes", nil},
		{"datagrid_relay_ready", nil},
		{"datagrid_relay_ready_check", map[string]string{"check": "nats"}},
		{"datagrid_relay_ready_check", map[string]string{"check": "stream"}},
		{"datagrid_relay_ready_check", map[string]string{"check": "signing_secret"}},
	} {
		if v, err := metricValue(relay.admin, g.name, g.labels); err != nil || v <= 0 {
			t.Errorf("before any delivery: %s%v = %v (%v), want > 0", g.name, g.labels, v, err)
		}
	}
	apiCalls, err := metricValue(demo.admin, "datagrid_relay_api_requests_total", nil)
	if err != nil {
		t.Fatal(err)
	}

	url := "http://" + relay.public + "/webhooks/datagrid"
	send := func(what string, method string, body []byte, sig string, want int) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if sig != "" {
			req.Header.Set("Datagrid-Signature", sig)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: got %d %s, want %d", what, resp.StatusCode, b, want)
		}
	}
	now := func() int64 { return time.Now().Unix() }
	event := func(id, eventType string) []byte {
		return []byte(fmt.Sprintf(`{"id":%q,"event_type":%q,"timestamp":%d,"data":{"job_id":"job-1"}}`, id, eventType, now()))
	}

	// Round 1: the common outcomes.
	for i := range 5 {
		b := event(fmt.Sprintf("evt_%d", i), "batch_prediction.completed")
		send("signed delivery", http.MethodPost, b, sign(secret, now(), b), http.StatusOK)
	}
	dup := event("evt_0", "batch_prediction.completed")
	send("redelivery", http.MethodPost, dup, sign(secret, now(), dup), http.StatusOK)
	send("wrong signature", http.MethodPost, dup, sign("whsec_wrong", now(), dup), http.StatusUnauthorized)
	send("stale timestamp", http.MethodPost, dup, sign(secret, now()-3600, dup), http.StatusUnauthorized)
	big := bytes.Repeat([]byte("x"), bodyLimit+1)
	send("too large", http.MethodPost, big, sign(secret, now(), big), http.StatusRequestEntityTooLarge)
	send("GET", http.MethodGet, nil, "", http.StatusMethodNotAllowed)
	notJSON := []byte("signed, but not an event")
	send("signed non-JSON", http.MethodPost, notJSON, sign(secret, now(), notJSON), http.StatusOK)
	unknownPath, err := http.Get("http://" + relay.public + "/wp-login.php")
	if err == nil {
		unknownPath.Body.Close()
	}
	scrape()

	// Round 2: the memory budget. Two deliveries send most of their body
	// and stall, each holding a buffer of the body limit; the next, of 40
	// KiB, does not fit beside them (503 overloaded). Then the stalled ones
	// are cut off: their bodies cannot be read (400 malformed).
	stalled := stallDelivery(t, relay.public, sign(secret, now(), nil), bodyLimit, bodyLimit-1024)
	stalled2 := stallDelivery(t, relay.public, sign(secret, now(), nil), bodyLimit, bodyLimit-1024)
	waitFor(ctx, t, "the stalled body to be held", func() error {
		v, err := metricValue(relay.admin, "datagrid_relay_inflight_body_bytes", nil)
		if err != nil || v < 2*bodyLimit {
			return fmt.Errorf("in-flight body bytes %v (%v)", v, err)
		}
		return nil
	})
	b := event("evt_overload", "batch_prediction.completed")
	b = append(b[:len(b)-1], []byte(`,"pad":"`+strings.Repeat("p", 40<<10)+`"}`)...)
	send("over the memory budget", http.MethodPost, b, sign(secret, now(), b), http.StatusServiceUnavailable)
	stalled.Close()
	stalled2.Close()
	waitFor(ctx, t, "the cut-off delivery to be counted", func() error {
		v, err := metricValue(relay.admin, "datagrid_relay_deliveries_total", map[string]string{"outcome": "malformed"})
		if err != nil || v < 1 {
			return fmt.Errorf("malformed %v (%v)", v, err)
		}
		return nil
	})
	scrape()
	// The demo reconciles every 30s: wait for a Datagrid API call after the
	// first scrape, so that the API panels' rates have something to show.
	waitFor(ctx, t, "the demo to call the Datagrid API again (its reconcile)", func() error {
		v, err := metricValue(demo.admin, "datagrid_relay_api_requests_total", nil)
		if err != nil || v <= apiCalls {
			return fmt.Errorf("API requests %v, %v at the first scrape (%v)", v, apiCalls, err)
		}
		return nil
	})
	scrape()

	// Round 3: NATS goes away; a delivery is answered 503 (unavailable).
	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(ctx, t, "the relay to see NATS gone", func() error {
		v, err := metricValue(relay.admin, "datagrid_relay_nats_connected", nil)
		if err != nil || v != 0 {
			return fmt.Errorf("nats_connected %v (%v)", v, err)
		}
		return nil
	})
	b = event("evt_unavailable", "batch_prediction.completed")
	send("NATS down", http.MethodPost, b, sign(secret, now(), b), http.StatusServiceUnavailable)
	scrape()
	scrape()
	logf("drove deliveries, scraped %d times per target", scrapes)

	// Every outcome was counted (a driving failure would otherwise hide
	// behind series that exist at 0).
	for _, o := range []string{"published", "duplicate", "invalid_signature", "stale_timestamp", "too_large",
		"method_not_allowed", "quarantined", "overloaded", "malformed", "unavailable"} {
		v, err := metricValue(relay.admin, "datagrid_relay_deliveries_total", map[string]string{"outcome": o})
		if err != nil || v < 1 {
			t.Errorf("outcome %s counted %v times (%v); want at least once", o, v, err)
		}
	}

	// Every panel's every query has data.
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	d := readDashboard(t)
	rangeDur := (time.Since(start) + time.Minute).Round(time.Second)
	for _, p := range leafPanels(d.Panels) {
		for _, tg := range p.Targets {
			expr := grafanaExpand(tg.Expr, "5m", model.Duration(rangeDur).String())
			expr = strings.NewReplacer(`"relay-ns"`, `"`+namespace+`"`).Replace(expr)
			q, err := engine.NewInstantQuery(ctx, db, nil, expr, last)
			if err != nil {
				t.Errorf("panel %q %s: %v", p.Title, tg.RefID, err)
				continue
			}
			res := q.Exec(ctx)
			if res.Err != nil {
				t.Errorf("panel %q %s: %v", p.Title, tg.RefID, res.Err)
				q.Close()
				continue
			}
			if n := nonNaN(res.Value); n == 0 {
				t.Errorf("panel %q query %s returns no data: %s", p.Title, tg.RefID, expr)
			}
			q.Close()
		}
	}
	logf("evaluated every panel")
}

// relayProc is a running relay binary.
type relayProc struct {
	public, admin string
}

// startRelay runs bin with args and env (and nothing else of the test's
// environment but PATH and HOME), waits for its "relay started" log line
// (when waitLog) and returns the addresses it names. The process is
// interrupted at the end of the test.
func startRelay(ctx context.Context, t *testing.T, bin string, waitLog bool, args, env []string) *relayProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logTail []string
	started := make(chan relayProc, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			logTail = append(logTail, line)
			if len(logTail) > 40 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
			var l struct {
				Msg    string `json:"msg"`
				Public string `json:"public_addr"`
				Admin  string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "relay started" {
				select {
				case started <- relayProc{public: l.Public, admin: l.Admin}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = pw.Close()
		if t.Failed() {
			logMu.Lock()
			t.Logf("relay %v log tail:\n%s", args, strings.Join(logTail, "\n"))
			logMu.Unlock()
		}
	})
	if !waitLog {
		return &relayProc{}
	}
	select {
	case p := <-started:
		return &p
	case <-ctx.Done():
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("relay %v: no \"relay started\" log line: %v\n%s", args, ctx.Err(), strings.Join(logTail, "\n"))
	case <-time.After(60 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("relay %v: no \"relay started\" log line within 60s\n%s", args, strings.Join(logTail, "\n"))
	}
	return nil
}

// startNATS runs an in-process NATS server with JetStream on a free
// loopback port.
func startNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// freeAddr returns a loopback address nothing listens on right now, for a
// program that cannot report the port it picked.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond until it returns nil, failing the test at ctx's
// deadline or after a minute with cond's last error.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getOK(url string) error {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}

// sign is Datagrid's signature: t=<unix>,v1=hex(HMAC-SHA256(secret, t + "." + body)).
func sign(secret string, ts int64, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(h, "%d.", ts)
	h.Write(body)
	return fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(h.Sum(nil)))
}

// stallDelivery opens a delivery with a valid-looking signature header
// that announces length bytes and sends only sent of them, then waits.
// Closing the returned connection cuts it off.
func stallDelivery(t *testing.T, addr, sig string, length, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /webhooks/datagrid HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nDatagrid-Signature: %s\r\nContent-Length: %d\r\n\r\n", addr, sig, length)
	if _, err := c.Write(bytes.Repeat([]byte("y"), sent)); err != nil {
		t.Fatal(err)
	}
	return c
}

func scrapeOnce(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// metricValue reads one series of the relay's /metrics now: the sum over
// the series of name whose labels include want.
func metricValue(addr, name string, want map[string]string) (float64, error) {
	fams, err := scrapeOnce(addr)
	if err != nil {
		return 0, err
	}
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("no %s", name)
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	if !found {
		return 0, fmt.Errorf("no %s%v", name, want)
	}
	return sum, nil
}

// scrapeInto scrapes addr's /metrics and appends every sample at ts with
// the target labels a ServiceMonitor gives, plus up.
func scrapeInto(db *teststorage.TestStorage, addr string, ts time.Time) error {
	fams, err := scrapeOnce(addr)
	if err != nil {
		return err
	}
	ms := ts.UnixMilli()
	target := map[string]string{"job": fullname, "namespace": namespace, "instance": addr}
	app := db.Appender(context.Background())
	add := func(name string, lbls []*dto.LabelPair, extra map[string]string, v float64) error {
		m := map[string]string{"__name__": name}
		for k, v := range target {
			m[k] = v
		}
		for _, l := range lbls {
			m[l.GetName()] = l.GetValue()
		}
		for k, v := range extra {
			m[k] = v
		}
		_, err := app.Append(0, labels.FromMap(m), ms, v)
		return err
	}
	if err := add("up", nil, nil, 1); err != nil {
		return err
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var err error
			switch {
			case m.Counter != nil:
				err = add(name, m.GetLabel(), nil, m.GetCounter().GetValue())
			case m.Gauge != nil:
				err = add(name, m.GetLabel(), nil, m.GetGauge().GetValue())
			case m.Untyped != nil:
				err = add(name, m.GetLabel(), nil, m.GetUntyped().GetValue())
			case m.Histogram != nil:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if err = add(name+"_bucket", m.GetLabel(), map[string]string{"le": formatLe(b.GetUpperBound())}, float64(b.GetCumulativeCount())); err != nil {
						break
					}
				}
				if err == nil {
					err = add(name+"_bucket", m.GetLabel(), map[string]string{"le": "+Inf"}, float64(h.GetSampleCount()))
				}
				if err == nil {
					err = add(name+"_count", m.GetLabel(), nil, float64(h.GetSampleCount()))
				}
				if err == nil {
					err = add(name+"_sum", m.GetLabel(), nil, h.GetSampleSum())
				}
			case m.Summary != nil:
				s := m.GetSummary()
				if err = add(name+"_count", m.GetLabel(), nil, float64(s.GetSampleCount())); err == nil {
					err = add(name+"_sum", m.GetLabel(), nil, s.GetSampleSum())
				}
			}
			if err != nil {
				_ = app.Rollback()
				return fmt.Errorf("append %s: %w", name, err)
			}
		}
	}
	return app.Commit()
}

func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// nonNaN counts the samples of a query result that are numbers.
func nonNaN(v any) int {
	n := 0
	switch v := v.(type) {
	case promql.Vector:
		for _, s := range v {
			if !math.IsNaN(s.F) {
				n++
			}
		}
	case promql.Scalar:
		if !math.IsNaN(v.V) {
			n++
		}
	case promql.Matrix:
		for _, s := range v {
			for _, p := range s.Floats {
				if !math.IsNaN(p.F) {
					n++
				}
			}
		}
	}
	return n
}
