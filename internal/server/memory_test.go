package server_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/signature"
)

// Defect 1 and 16: memory is bounded whatever clients declare, and slow
// clients are cut at RELAY_READ_TIMEOUT.
//
// What the code promises, and so what these tests assert: a body's memory
// is taken from the budget (RELAY_MAX_INFLIGHT_BYTES) as its bytes arrive,
// never on Content-Length: a first chunk of 8 KiB, then doubling up to the
// limit in force plus one byte, each growth taken before it is made. A
// client that declares a megabyte and trickles bytes holds 8 KiB; a good
// delivery of a few hundred bytes needs 8 KiB. Past the budget a delivery
// gets 503 with Retry-After, outcome overloaded.

const (
	memReadTimeout = 2 * time.Second
	memBudget      = 4 << 20 // RELAY_MAX_INFLIGHT_BYTES
	firstChunk     = 8 << 10 // the budget's first reservation per body
)

// liveHeap collects garbage and returns the bytes of live heap objects: the
// relay runs in this process, so its bodies are in here.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// slowConn is a client the relay must cut off: it records how long the
// relay kept it and the first line it answered, if any.
type slowConn struct {
	closedAfter time.Duration
	statusLine  string
	readErr     error // how the connection ended for the client
}

// holdSlow dials addr, writes head, then trickles drip every interval until
// the relay closes the connection or stop closes; it reports how long the
// connection lived. Loopback only.
func holdSlow(addr, head, drip string, interval time.Duration, stop <-chan struct{}) (slowConn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return slowConn{}, err
	}
	defer conn.Close()
	dialed := time.Now()
	_ = conn.SetDeadline(dialed.Add(30 * time.Second)) // a bound, far past the relay's timeouts
	if _, err := io.WriteString(conn, head); err != nil {
		return slowConn{}, err
	}
	closed := make(chan slowConn, 1)
	go func() {
		br := bufio.NewReader(conn)
		line, err := br.ReadString('\n') // the answer, if any, then EOF
		if line != "" {
			_, err = io.Copy(io.Discard, br)
		}
		closed <- slowConn{closedAfter: time.Since(dialed), statusLine: strings.TrimSpace(line), readErr: err}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case c := <-closed:
			return c, nil
		case <-stop:
			return slowConn{}, errors.New("still open when the test gave up")
		case <-tick.C:
			_, _ = io.WriteString(conn, drip) // fails once the relay has closed: the reader sees it
		}
	}
}

// TestSlowClientsCannotExhaustMemory opens hundreds of connections that
// declare a megabyte and trickle their bodies, slowloris connections that
// never finish their headers, and idle keep-alives, while good deliveries
// keep coming. The heap stays within the budget plus a margin per
// connection, good deliveries are all stored, and the slow connections are
// cut at RELAY_READ_TIMEOUT (2s here, not net/http's or a fixed 5s).
func TestSlowClientsCannotExhaustMemory(t *testing.T) {
	slowBodies, slowHeaders, idle := 300, 100, 50
	if testing.Short() {
		slowBodies, slowHeaders, idle = 60, 20, 10
	}
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{
		"RELAY_READ_TIMEOUT":       memReadTimeout.String(),
		"RELAY_MAX_INFLIGHT_BYTES": fmt.Sprint(memBudget),
		// Hundreds of connections and a collection every sample on two
		// shared cores: the bus may take longer than the usual test 1s.
		"RELAY_PUBLISH_TIMEOUT": "10s",
	}, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	addr := strings.TrimPrefix(strings.TrimSuffix(r.delivery, "/webhooks/datagrid"), "http://")
	// Every slow body holds its first chunk; the good deliveries need theirs.
	if (slowBodies+4)*firstChunk > memBudget {
		t.Fatalf("%d slow bodies would spend the budget: the test could not expect every good delivery to pass", slowBodies)
	}

	baseline := liveHeap()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bodies, headers []slowConn
	var dialErrors []error

	// Idle keep-alives: one delivery each, then silence.
	idleConns := make([]net.Conn, 0, idle)
	for i := range idle {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		body := relaytest.Envelope(fmt.Sprintf("evt_idle_%d", i), "batch_prediction.completed")
		fmt.Fprintf(conn, "POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n%s: %s\r\n\r\n%s",
			len(body), signature.Header, signature.Sign([]byte(secret), time.Now().Unix(), body), body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("idle keep-alive %d: first delivery got %v %v", i, resp, err)
		}
		resp.Body.Close()
		idleConns = append(idleConns, conn)
	}

	// Slow bodies: a signature header of valid shape and fresh t, so they
	// pass the header check, and a declared megabyte sent 10 bytes at a time.
	for range slowBodies {
		head := fmt.Sprintf("POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\nContent-Length: 1044000\r\n%s: t=%d,v1=%s\r\n\r\n",
			signature.Header, time.Now().Unix(), strings.Repeat("0", 64))
		wg.Go(func() {
			c, err := holdSlow(addr, head, `{"aaaaaaaa`, 200*time.Millisecond, stop)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				dialErrors = append(dialErrors, err)
				return
			}
			bodies = append(bodies, c)
		})
	}
	// Slowloris: headers that never end.
	for range slowHeaders {
		wg.Go(func() {
			c, err := holdSlow(addr, "POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\n", "X-Slow: 1\r\n", 200*time.Millisecond, stop)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				dialErrors = append(dialErrors, err)
				return
			}
			headers = append(headers, c)
		})
	}

	// Good deliveries meanwhile, and the heap and the budget watched.
	var goodOK, goodBad atomic.Int32
	var goodStop atomic.Bool
	var good sync.WaitGroup
	for w := range 2 {
		good.Go(func() {
			for i := 0; i < 10000 && !goodStop.Load(); i++ {
				id := fmt.Sprintf("evt_good_w%d_%d", w, i)
				resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope(id, "batch_prediction.completed"))
				if err == nil && resp.Status == 200 {
					goodOK.Add(1)
				} else if goodBad.Add(1) <= 5 {
					t.Errorf("good delivery %s during the attack: got %d %q %v, want 200", id, resp.Status, resp.Body, err)
				}
			}
		})
	}
	var peakHeap uint64
	var peakHeld float64
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	deadline := time.After(20 * time.Second)
watch:
	for {
		peakHeap = max(peakHeap, liveHeap())
		if m, err := scrape(r.admin); err == nil {
			peakHeld = max(peakHeld, metricValue(m, "datagrid_relay_inflight_body_bytes"))
		}
		select {
		case <-finished:
			break watch
		case <-deadline:
			close(stop)
			<-finished
			t.Error("slow connections still open after 20s")
			break watch
		case <-time.After(250 * time.Millisecond): // the sampling period
		}
	}
	goodStop.Store(true)
	good.Wait()

	for _, err := range dialErrors {
		t.Error(err)
	}
	// Heap: the budget, plus per connection what net/http keeps for it
	// besides the body (buffered reader and writer of 4 KiB each, request,
	// header map, context: under 16 KiB; 32 KiB leaves room), plus 16 MiB
	// for everything else in this process (the in-process NATS server, the
	// test's own clients, metrics scrapes). Reserving on Content-Length, as
	// before the fix, needs a megabyte per slow body.
	conns := uint64(slowBodies + slowHeaders + idle)
	margin := memBudget + conns*32<<10 + 16<<20
	grown := int64(peakHeap) - int64(baseline)
	t.Logf("live heap: baseline %.1f MiB, peak %.1f MiB (+%.1f MiB, allowed +%.1f MiB); budget held at most %.0f bytes; %d good deliveries stored",
		float64(baseline)/(1<<20), float64(peakHeap)/(1<<20), float64(grown)/(1<<20), float64(margin)/(1<<20), peakHeld, goodOK.Load())
	if grown > int64(margin) {
		t.Errorf("live heap grew by %d bytes under %d slow connections, want at most %d", grown, conns, margin)
	}
	if peakHeld > memBudget {
		t.Errorf("datagrid_relay_inflight_body_bytes reached %.0f, over the budget %d", peakHeld, memBudget)
	}
	if goodOK.Load() == 0 {
		t.Error("no good delivery stored during the attack")
	}

	// Every slow connection was cut by the relay's read timeout. Hundreds
	// at once on a loaded machine are accepted late, so the bound here is
	// loose; TestSlowClientsCutAtReadTimeout times a few to the tenth.
	mu.Lock()
	// A connection the kernel reset before the relay ever read from it
	// (seen once in many runs on a loaded machine: no answer, reset within
	// microseconds of the dial) is not a connection the relay held. A few
	// such casualties are tolerated and left out of the counts below.
	lost := 0
	bodies = slices.DeleteFunc(bodies, func(c slowConn) bool {
		gone := c.statusLine == "" && c.closedAfter < 100*time.Millisecond && errors.Is(c.readErr, syscall.ECONNRESET)
		if gone {
			lost++
		}
		return gone
	})
	if lost > slowBodies/100 {
		t.Errorf("%d slow bodies reset right after the dial, want at most %d", lost, slowBodies/100)
	}
	checkCut(t, "slow bodies", bodies, slowBodies-lost, "HTTP/1.1 400 Bad Request", 0, 2*memReadTimeout+4*time.Second)
	checkCut(t, "slow headers", headers, slowHeaders, "", 0, 2*memReadTimeout+4*time.Second)
	mu.Unlock()

	// The budget is whole again; the idle keep-alives are still open (they
	// follow the idle timeout) and usable.
	relaytest.WaitFor(t, 5*time.Second, "the body budget to be free again", func() bool {
		m, _ := scrape(r.admin)
		return metricValue(m, "datagrid_relay_inflight_body_bytes") == 0
	})
	for i, conn := range idleConns {
		body := relaytest.Envelope(fmt.Sprintf("evt_idle_again_%d", i), "batch_prediction.completed")
		fmt.Fprintf(conn, "POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n%s: %s\r\n\r\n%s",
			len(body), signature.Header, signature.Sign([]byte(secret), time.Now().Unix(), body), body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("idle keep-alive %d reused: got %v %v, want 200", i, resp, err)
			continue
		}
		resp.Body.Close()
	}
	o := outcomes(t, r.admin)
	if o["malformed"] != float64(slowBodies-lost) {
		t.Errorf("malformed outcomes: got %v, want one per slow body read (%d)", o["malformed"], slowBodies-lost)
	}
}

// checkCut checks that n slow connections were closed by the relay, each
// after between atLeast and atMost, answered wantLine when it is set.
func checkCut(t *testing.T, kind string, cs []slowConn, n int, wantLine string, atLeast, atMost time.Duration) {
	t.Helper()
	if len(cs) != n {
		t.Errorf("%s: %d of %d connections closed by the relay", kind, len(cs), n)
	}
	shortest, longest := time.Hour, time.Duration(0)
	for _, c := range cs {
		shortest, longest = min(shortest, c.closedAfter), max(longest, c.closedAfter)
		if c.closedAfter < atLeast || c.closedAfter > atMost {
			t.Errorf("%s: connection held %s, want between %s and %s (RELAY_READ_TIMEOUT %s)", kind, c.closedAfter, atLeast, atMost, memReadTimeout)
		}
		if wantLine != "" && c.statusLine != wantLine {
			t.Errorf("%s: answered %q (%v) after %s, want %q", kind, c.statusLine, c.readErr, c.closedAfter, wantLine)
		}
	}
	t.Logf("%s: %d connections held from %s to %s", kind, len(cs), shortest, longest)
}

// TestSlowClientsCutAtReadTimeout times a few slow connections: slowloris
// headers and trickled bodies are both cut at RELAY_READ_TIMEOUT (2s),
// where headers used to be held a fixed 5s (defect 16).
func TestSlowClientsCutAtReadTimeout(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{"RELAY_READ_TIMEOUT": memReadTimeout.String()}, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	addr := strings.TrimPrefix(strings.TrimSuffix(r.delivery, "/webhooks/datagrid"), "http://")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bodies, headers []slowConn
	stop := make(chan struct{})
	timer := time.AfterFunc(20*time.Second, func() { close(stop) })
	defer timer.Stop()
	hold := func(into *[]slowConn, head, drip string) {
		wg.Go(func() {
			c, err := holdSlow(addr, head, drip, 100*time.Millisecond, stop)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			*into = append(*into, c)
		})
	}
	const n = 10
	for range n {
		hold(&headers, "POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\n", "X-Slow: 1\r\n")
		hold(&bodies, fmt.Sprintf("POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\nContent-Length: 1044000\r\n%s: t=%d,v1=%s\r\n\r\n",
			signature.Header, time.Now().Unix(), strings.Repeat("0", 64)), "aaaa")
	}
	wg.Wait()
	// The deadline runs from when the relay starts reading the request,
	// a little after the dial; 1.5s on top covers a loaded machine and
	// stays clear of the old 5s.
	checkCut(t, "slow headers", headers, n, "", memReadTimeout-100*time.Millisecond, memReadTimeout+1500*time.Millisecond)
	checkCut(t, "slow bodies", bodies, n, "HTTP/1.1 400 Bad Request", memReadTimeout-100*time.Millisecond, memReadTimeout+1500*time.Millisecond)
}

// TestMemoryBudgetSpentAnswersOverloaded spends the body budget with bodies
// held half-sent, then shows that a delivery needing more than what is left
// gets 503 with Retry-After (outcome overloaded), that one fitting in what
// is left is stored, and that the budget comes back once they are gone.
func TestMemoryBudgetSpentAnswersOverloaded(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{
		"RELAY_READ_TIMEOUT":       "30s", // the held bodies must outlast the test's checks
		"RELAY_MAX_INFLIGHT_BYTES": fmt.Sprint(memBudget),
	}, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	addr := strings.TrimPrefix(strings.TrimSuffix(r.delivery, "/webhooks/datagrid"), "http://")
	m, _ := scrape(r.admin)
	limit := int(metricValue(m, "datagrid_relay_delivery_body_limit_bytes"))
	held := func() float64 {
		m, _ := scrape(r.admin)
		return metricValue(m, "datagrid_relay_inflight_body_bytes")
	}

	// Bodies held half-sent spend the budget down to less than two first
	// chunks: a buffer of the limit for each that fits, then smaller ones,
	// halving. A buffer grows by doubling once it is full, up to the limit,
	// and the budget holds the capacity of every live buffer: a growth takes
	// only the difference.
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// The buffer sizes a body goes through, largest first: the limit, then
	// 512 KiB, 256 KiB, ... down to the first chunk. For each: what its last
	// growth takes, and how much to send to get it.
	type step struct{ size, growth, send int }
	steps := []step{{limit, limit - 1<<19, 1<<19 + 100}}
	for size := 1 << 19; size > firstChunk; size /= 2 {
		steps = append(steps, step{size, size / 2, size/2 + 100})
	}
	steps = append(steps, step{firstChunk, firstChunk, 100})
	left, holding := memBudget, 0
	for _, st := range steps {
		size, send := st.size, st.send
		for left-size >= firstChunk && st.growth <= left {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
			fmt.Fprintf(conn, "POST /webhooks/datagrid HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n%s: t=%d,v1=%s\r\n\r\n%s",
				limit, signature.Header, time.Now().Unix(), strings.Repeat("0", 64), strings.Repeat("x", send))
			left, holding = left-size, holding+size
			relaytest.WaitFor(t, 10*time.Second, fmt.Sprintf("a held body of %d bytes", size), func() bool {
				return held() == float64(holding)
			})
		}
	}
	if left < firstChunk || left >= 3*firstChunk {
		t.Fatalf("%d bytes left in the budget: the checks below need one first chunk to fit, and no growth", left)
	}
	t.Logf("%d bodies hold %d bytes; %d left of the budget", len(conns), holding, left)

	big := padded("evt_overloaded", 3*firstChunk) // needs a growth past the first chunk
	resp, err := relaytest.Post(r.delivery, secret, big)
	if err != nil || resp.Status != 503 || resp.Header.Get("Retry-After") == "" || resp.Body != `{"error":"relay busy, retry later"}`+"\n" {
		t.Errorf("delivery past the budget: got %d %q (Retry-After %q) %v, want 503 relay busy with Retry-After",
			resp.Status, resp.Body, resp.Header.Get("Retry-After"), err)
	}
	small := relaytest.Envelope("evt_fits", "batch_prediction.completed")
	if resp, err := relaytest.Post(r.delivery, secret, small); err != nil || resp.Status != 200 {
		t.Errorf("small delivery while the budget is nearly spent: got %d %q %v, want 200", resp.Status, resp.Body, err)
	}
	o := outcomes(t, r.admin)
	if o["overloaded"] != 1 {
		t.Errorf("overloaded outcomes: got %v, want 1", o["overloaded"])
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	relaytest.WaitFor(t, 10*time.Second, "the budget to be free again", func() bool { return held() == 0 })
	if resp, err := relaytest.Post(r.delivery, secret, big); err != nil || resp.Status != 200 {
		t.Errorf("the refused delivery, retried: got %d %q %v, want 200", resp.Status, resp.Body, err)
	}
	ids := streamMsgIDs(t, ns.ClientURL())
	if ids["evt_overloaded"] != 1 || ids["evt_fits"] != 1 {
		t.Errorf("stored: %v, want evt_overloaded and evt_fits once each", ids)
	}
}

// TestHugeLimitsWithoutNATS is defect 1's crash: with the largest
// RELAY_MAX_BODY_BYTES and NATS not yet connected (so the server's
// max_payload is unknown), a request declaring an enormous body made the
// relay reserve it (a panic, or out of memory). Now nothing is reserved on
// the declared length: the relay answers, stays up, and its heap does not
// move.
func TestHugeLimitsWithoutNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "nats://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	r := start(t, nowhere, map[string]string{
		"RELAY_MAX_BODY_BYTES":     "67108864",
		"RELAY_MAX_INFLIGHT_BYTES": "67108864",
	}, nil)
	ready := relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	if !strings.Contains(ready.Body, "nats") {
		t.Errorf("readyz: got %q, want the reason to name nats", ready.Body)
	}
	addr := strings.TrimPrefix(strings.TrimSuffix(r.delivery, "/webhooks/datagrid"), "http://")
	baseline := liveHeap()
	for _, tc := range []struct{ declared, want string }{
		{"9223372036854775807", `{"error":"body larger than 67108864 bytes"}`}, // refused on the declared length, nothing read
		{"67108864", `{"error":"could not read body"}`},
		{"1044000", `{"error":"could not read body"}`},
	} {
		req := rawRequest{method: "POST", target: "/webhooks/datagrid", body: []byte(`{"id":"evt_huge"`), contentLength: tc.declared,
			closeWrite: true, header: []string{fmt.Sprintf("%s: t=%d,v1=%s", signature.Header, time.Now().Unix(), strings.Repeat("0", 64))}}
		resp, body, err := req.send(addr)
		if err != nil || strings.TrimSpace(string(body)) != tc.want {
			t.Errorf("Content-Length %s, 16 bytes sent: got %v %q %v, want %s", tc.declared, resp, body, err, tc.want)
		}
	}
	if grown := int64(liveHeap()) - int64(baseline); grown > 4<<20 {
		t.Errorf("live heap grew by %d bytes for bodies that were never sent", grown)
	}
	resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_no_nats", "batch_prediction.completed"))
	if err != nil || resp.Status != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("delivery without NATS: got %d %q %v, want 503 with Retry-After", resp.Status, resp.Body, err)
	}
	if got, err := relaytest.Get(r.admin + "/healthz"); err != nil || got.Status != 200 {
		t.Errorf("healthz after the huge requests: got %d %v, want 200", got.Status, err)
	}
}
