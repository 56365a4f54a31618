package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/datagrid-relay/relay/internal/natstest"
)

// The worked example of Datagrid's signature scheme, computed with
// printf '%s' "1775847600.<body>" | openssl dgst -sha256 -hmac whsec_test_5f1c
const (
	exampleSecret = "whsec_test_5f1c"
	exampleT      = 1775847600
	exampleBody   = `{"id":"evt_1","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{}}`
	exampleSig    = "t=1775847600,v1=4acbf0169980ae2a35acaf218ec8fcba464bccc1af61cd8cabc887ad8a7d68f1"
)

func TestSignMatchesWorkedExample(t *testing.T) {
	if got := Sign([]byte(exampleSecret), exampleT, []byte(exampleBody)); got != exampleSig {
		t.Fatalf("got %s, want %s", got, exampleSig)
	}
	if !verify(exampleSig, []byte(exampleBody), []byte(exampleSecret), time.Unix(exampleT, 0), 5*time.Minute) {
		t.Fatal("baseline's verify refuses the worked example")
	}
}

func TestBodyTemplateHasTheSizeAndIsAnEnvelope(t *testing.T) {
	for _, size := range []int{0, 1024, 64 * 1024} {
		b := newBodyTemplate(size, exampleT).body("evt_x_1")
		if size >= 1024 && len(b) != size {
			t.Errorf("size %d: got %d bytes", size, len(b))
		}
		if !bytes.HasPrefix(b, []byte(`{"id":"evt_x_1","event_type":"batch_prediction.completed","timestamp":1775847600,`)) || !bytes.HasSuffix(b, []byte(`"}}}`)) {
			t.Errorf("size %d: not the expected envelope: %.120s", size, b)
		}
	}
}

// jetStream starts an in-process nats-server and returns a JetStream
// context on it.
func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	s := natstest.Start(t, nil)
	return natstest.JetStream(t, s.ClientURL())
}

// baselineServer serves the baseline on its own stream.
func baselineServer(t *testing.T, js jetstream.JetStream) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureStream(ctx, js, BaselineStream, BaselinePrefix); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewBaseline(BaselineConfig{
		JS: js, Secret: []byte(Secret), Stream: BaselineStream, Prefix: BaselinePrefix,
		Source: "https://api.datagrid.com", Tolerance: 5 * time.Minute,
	}))
	t.Cleanup(srv.Close)
	return srv
}

func send(t *testing.T, method, url, sig string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if sig != "" {
		req.Header.Set(SignatureHeader, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBaselineVerifiesSignatures(t *testing.T) {
	js := jetStream(t)
	srv := baselineServer(t, js)
	now := time.Now().Unix()
	good := newBodyTemplate(1024, now).body("evt_good")
	other := newBodyTemplate(1024, now).body("evt_other")
	for _, tc := range []struct {
		name, method, sig string
		body              []byte
		want              int
	}{
		{"valid", http.MethodPost, Sign([]byte(Secret), now, good), good, http.StatusOK},
		{"valid again is a duplicate, answered 200", http.MethodPost, Sign([]byte(Secret), now, good), good, http.StatusOK},
		{"several v1, one good", http.MethodPost, "t=" + strconv.FormatInt(now, 10) + ",v1=" + strings.Repeat("0", 64) + ", " + Sign([]byte(Secret), now, good)[len("t=1775847600,"):], good, http.StatusOK},
		{"no header", http.MethodPost, "", other, http.StatusUnauthorized},
		{"wrong secret", http.MethodPost, Sign([]byte("whsec_wrong"), now, other), other, http.StatusUnauthorized},
		{"body changed after signing", http.MethodPost, Sign([]byte(Secret), now, good), other, http.StatusUnauthorized},
		{"t changed after signing", http.MethodPost, strings.Replace(Sign([]byte(Secret), now, other), "t="+strconv.FormatInt(now, 10), "t="+strconv.FormatInt(now-1, 10), 1), other, http.StatusUnauthorized},
		{"stale t", http.MethodPost, Sign([]byte(Secret), now-600, other), other, http.StatusUnauthorized},
		{"future t", http.MethodPost, Sign([]byte(Secret), now+600, other), other, http.StatusUnauthorized},
		{"garbage header", http.MethodPost, "v1=zz,t=abc", other, http.StatusUnauthorized},
		{"GET", http.MethodGet, Sign([]byte(Secret), now, other), other, http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(t, tc.method, srv.URL, tc.sig, tc.body); got != tc.want {
				t.Fatalf("got status %d, want %d", got, tc.want)
			}
		})
	}

	// Only the valid delivery reached the stream, once, with the relay's headers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, BaselineStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, BaselinePrefix+".batch_prediction.completed")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		jetstream.MsgIDHeader: "evt_good", "Content-Type": "application/json", "ce-specversion": "1.0",
		"ce-id": "evt_good", "ce-type": "batch_prediction.completed", "ce-source": "https://api.datagrid.com",
		"ce-time": time.Unix(now, 0).UTC().Format(time.RFC3339),
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s: got %q, want %q", k, got, v)
		}
	}
	if !bytes.Equal(msg.Data, good) {
		t.Errorf("payload is not the body byte for byte")
	}
	ids, err := ReadIDs(ctx, js, BaselineStream, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c := Check([]string{"evt_good"}, ids); !c.OK() || c.Stored != 1 || c.Unacked != 0 {
		t.Fatalf("got %s, want evt_good stored once and nothing else", c)
	}
}

func TestCheckFindsLostAndDuplicated(t *testing.T) {
	for _, tc := range []struct {
		name                string
		acked               []string
		stored              map[string]int
		lost, dup           []string
		unacked, ackedCount int
	}{
		{"all once", []string{"a", "b"}, map[string]int{"a": 1, "b": 1}, nil, nil, 0, 2},
		{"one lost", []string{"a", "b"}, map[string]int{"a": 1}, []string{"b"}, nil, 0, 2},
		{"one duplicated", []string{"a", "b"}, map[string]int{"a": 1, "b": 2}, nil, []string{"b"}, 0, 2},
		{"lost and duplicated", []string{"a", "b", "c"}, map[string]int{"a": 3, "c": 1}, []string{"b"}, []string{"a"}, 0, 3},
		{"re-sent id acked twice counts once", []string{"a", "a"}, map[string]int{"a": 1}, nil, nil, 0, 1},
		{"stored but never acked is no loss", []string{"a"}, map[string]int{"a": 1, "z": 1}, nil, nil, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Check(tc.acked, tc.stored)
			if !slices.Equal(c.Lost, tc.lost) || !slices.Equal(c.Duplicated, tc.dup) || c.Unacked != tc.unacked || c.Acked != tc.ackedCount {
				t.Fatalf("got lost %v duplicated %v unacked %d acked %d, want %v %v %d %d",
					c.Lost, c.Duplicated, c.Unacked, c.Acked, tc.lost, tc.dup, tc.unacked, tc.ackedCount)
			}
			if c.OK() != (len(tc.lost) == 0 && len(tc.dup) == 0) {
				t.Fatalf("got OK %v for %s", c.OK(), c)
			}
		})
	}
}

// TestCheckerFindsLostAndDuplicatedInARealStream stores one id twice (after
// a short duplicate window has passed) and leaves one acked id out.
func TestCheckerFindsLostAndDuplicatedInARealStream(t *testing.T) {
	js := jetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CHECK", Subjects: []string{"check.>"}, Storage: jetstream.FileStorage, Duplicates: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	publish := func(id string) *jetstream.PubAck {
		t.Helper()
		m := nats.NewMsg("check.event")
		m.Header.Set(jetstream.MsgIDHeader, id)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	publish("once")
	publish("twice")
	// Wait until the duplicate window has let go of "twice" and a second
	// copy is stored; give up at the context's deadline.
	for publish("twice").Duplicate {
		select {
		case <-ctx.Done():
			t.Fatal("the duplicate window never expired")
		case <-time.After(10 * time.Millisecond):
		}
	}
	ids, err := ReadIDs(ctx, js, "CHECK", 1)
	if err != nil {
		t.Fatal(err)
	}
	c := Check([]string{"once", "twice", "never_stored"}, ids)
	if !slices.Equal(c.Lost, []string{"never_stored"}) || !slices.Equal(c.Duplicated, []string{"twice"}) || c.Stored != 3 {
		t.Fatalf("got %s, want never_stored lost, twice duplicated, 3 stored", c)
	}
	// Reading from a later sequence sees only what came after it.
	ids, err = ReadIDs(ctx, js, "CHECK", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids["twice"] != 1 {
		t.Fatalf("from sequence 3: got %v, want twice once", ids)
	}
}

func TestLoadAgainstTheBaselineStoresEveryAckedIDOnce(t *testing.T) {
	js := jetStream(t)
	srv := baselineServer(t, js)
	res, err := Load(context.Background(), LoadConfig{
		URL: srv.URL + "/", Secret: []byte(Secret), Concurrency: 4, BodySize: 1024,
		Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, MaxRequests: 5000, ResendEvery: 5,
		IDPrefix: "evt_test_",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status[http.StatusOK] == 0 || len(res.Status) != 1 {
		t.Fatalf("got statuses %s, want only 200", statusString(res.Status))
	}
	if res.Resent == 0 || res.Requests == 0 || res.Rate() <= 0 {
		t.Fatalf("got %d re-sent, %d measured, %.0f/s; want all above 0", res.Resent, res.Requests, res.Rate())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids, err := ReadIDs(ctx, js, BaselineStream, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c := Check(res.Acked, ids); !c.OK() || c.Acked == 0 || c.Stored != c.Acked {
		t.Fatalf("got %s, want every acked id stored once", c)
	}
}

func TestLoadIsBoundedAndLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(NewBare())
	defer srv.Close()
	start := time.Now()
	res, err := Load(context.Background(), LoadConfig{
		URL: srv.URL + "/x", Secret: []byte(Secret), Concurrency: 3, BodySize: 64 * 1024,
		Duration: time.Minute, MaxRequests: 50, IDPrefix: "evt_",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Status[http.StatusNoContent]; got != 50 {
		t.Fatalf("got %s, want 50 answers 204 (the request bound)", statusString(res.Status))
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("took %s: the request bound did not stop it", time.Since(start))
	}
	srv.Close()
}

func TestLoadRefusesNonLoopbackAndHTTPS(t *testing.T) {
	for _, u := range []string{"http://192.0.2.1:8080/", "http://example.com/", "http://10.0.0.1/", "https://127.0.0.1/"} {
		if _, err := Load(context.Background(), LoadConfig{URL: u, Concurrency: 1, MaxRequests: 1, Duration: time.Second}); err == nil {
			t.Errorf("%s: got no error, want a refusal", u)
		}
	}
}

func TestProcSamplesThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for { // burn CPU until the 10ms counter moves
		after, err := ProcCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("CPU time did not move in 10s of busy loop")
		}
		Sign([]byte(Secret), 1, make([]byte, 4096))
	}
	rss, err := ProcPeakRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("got peak RSS %d, %v; want over 1 MiB", rss, err)
	}
}

func TestUpdateFileKeepsTheTextAround(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &Report{Options: Options{Scenarios: DefaultScenarios()[:1], Targets: []string{TargetRelay}}}
	for range 2 { // the second run replaces the first
		if err := UpdateFile(path, rep); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	if !strings.HasPrefix(s, "# Benchmarks\n\nhand-written\n\n"+BeginMarker) || strings.Count(s, BeginMarker) != 1 || !strings.HasSuffix(s, EndMarker+"\n") {
		t.Fatalf("got:\n%s", s)
	}
	// Text after the generated part survives too.
	if err := os.WriteFile(path, []byte(s+"\n## After\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := UpdateFile(path, rep); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if !strings.HasSuffix(string(b), EndMarker+"\n\n## After\n") {
		t.Fatalf("got:\n%s", b)
	}
}

func TestRotateAlternatesTheOrder(t *testing.T) {
	s := []string{"a", "b", "c"}
	for k, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := rotate(s, k); !slices.Equal(got, want) {
			t.Errorf("rotate %d: got %v, want %v", k, got, want)
		}
	}
}

func TestReportRatiosAndProblems(t *testing.T) {
	run := func(round int, target string, rate float64, cpu time.Duration, p99 time.Duration, status map[int]int, check *CheckResult) RunResult {
		n := int(rate) // one second measured
		lat := make([]time.Duration, n)
		for i := range lat {
			lat[i] = p99
		}
		return RunResult{Scenario: "c64-1KiB", Round: round, Target: target, CPU: cpu * time.Duration(n),
			Load: LoadResult{Requests: n, Elapsed: time.Second, Latencies: lat, Status: status}, Check: check}
	}
	ok := &CheckResult{Acked: 1}
	rep := &Report{
		Options: Options{Scenarios: DefaultScenarios()[:1], Targets: []string{TargetRelay, TargetBaseline, TargetBare}},
		Runs: []RunResult{
			run(1, TargetRelay, 800, 100*time.Microsecond, 20*time.Millisecond, map[int]int{200: 800}, ok),
			run(1, TargetBaseline, 1000, 125*time.Microsecond, 10*time.Millisecond, map[int]int{200: 1000}, ok),
			run(1, TargetBare, 4000, 40*time.Microsecond, 5*time.Millisecond, map[int]int{204: 4000}, nil),
			run(2, TargetRelay, 1200, 100*time.Microsecond, 10*time.Millisecond, map[int]int{200: 1200}, &CheckResult{Acked: 2, Lost: []string{"evt_x"}}),
			run(2, TargetBaseline, 1000, 100*time.Microsecond, 10*time.Millisecond, map[int]int{503: 1000}, ok),
		},
	}
	rs := rep.Ratios("c64-1KiB")
	if len(rs) != 2 || rs[0].Throughput != 0.8 || rs[0].CPU != 0.8 || rs[0].P99 != 2 || !rs[0].HaveBare || rs[0].P99OverBare != 4 || rs[1].HaveBare {
		t.Fatalf("got ratios %+v", rs)
	}
	if md := MedianRatios(rs); md.Throughput != 1.0 || md.CPU != 0.9 {
		t.Fatalf("got medians %+v, want throughput 1.0 and CPU 0.9", md)
	}
	probs := strings.Join(rep.Problems(), "\n")
	if !strings.Contains(probs, "round 2 relay: stream:") || !strings.Contains(probs, "round 2 baseline: no delivery answered 2xx") || strings.Count(probs, "\n") != 1 {
		t.Fatalf("got problems:\n%s\nwant the lost id and the baseline without 2xx, nothing else", probs)
	}
	var md strings.Builder
	rep.WriteMarkdown(&md)
	for _, want := range []string{"| c64-1KiB | 2 | 1.00× | 0.90× |", "| c64-1KiB deliveries/s ≥ 1.30× baseline | 1.00× | **no** |", "1 lost"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}
