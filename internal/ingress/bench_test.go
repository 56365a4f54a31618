package ingress_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/ingress"
	"github.com/datagrid-relay/relay/internal/publish"
	"github.com/datagrid-relay/relay/internal/signature"
)

// BenchmarkHandler is the whole delivery path, verification to JetStream
// ack, on a realistic 1 KiB body, each iteration a new event.
//
// The NATS server runs in the same process, so allocations and time include
// the server's side of each publish; BenchmarkHandlerOwnCost shows the
// relay's own part alone.
func BenchmarkHandler(b *testing.B) {
	f := newFixture(b, fixtureOpts{})
	bodies, sigs := benchDeliveries(f, b.N)
	reqs := benchRequests(bodies, sigs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		serveReq(b, f.handler, reqs[i])
	}
}

// BenchmarkHandlerOwnCost is BenchmarkHandler with a bus that acknowledges
// at once: the relay's own cost per delivery (header, body, signature,
// envelope, metrics, answer), without NATS.
func BenchmarkHandlerOwnCost(b *testing.B) {
	f := newFixture(b, fixtureOpts{})
	h := ingress.NewHandler(ingress.Config{
		Keyring: signature.Static{signature.NewSecret([]byte(testSecret), "")}, Publisher: instantBus{},
		Metrics: f.metrics, Log: zap.NewNop(), Tolerance: 5 * time.Minute, MaxInflightBytes: 32 << 20,
		JetStream: true, Now: func() time.Time { return f.now },
	})
	bodies, sigs := benchDeliveries(f, b.N)
	reqs := benchRequests(bodies, sigs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		serveReq(b, h, reqs[i])
	}
}

// instantBus stores nothing and acknowledges everything at once.
type instantBus struct{}

func (instantBus) Publish(context.Context, publish.Message) (publish.Result, error) {
	return publish.Result{Sequence: 1}, nil
}
func (instantBus) BodyLimit() int64 { return 1 << 20 }

// benchRequests builds the requests before the timer starts: their cost is
// the client's, not the handler's.
func benchRequests(bodies [][]byte, sigs []string) []benchReq {
	reqs := make([]benchReq, len(bodies))
	for i := range bodies {
		r := httptest.NewRequest(http.MethodPost, testPath, bytes.NewReader(bodies[i]))
		r.Header.Set(signature.Header, sigs[i])
		reqs[i] = benchReq{r, &discard{h: http.Header{"Content-Type": nil}}}
	}
	return reqs
}

type benchReq struct {
	r *http.Request
	w *discard
}

// discard is a ResponseWriter that keeps only the status. Like net/http's,
// its header map exists before the handler runs (net/http makes it while
// reading the request) and it writes strings without copying them, so the
// benchmark counts none of the writer's allocations as the handler's.
type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header               { return d.h }
func (d *discard) Write(p []byte) (int, error)       { return len(p), nil }
func (d *discard) WriteString(s string) (int, error) { return len(s), nil }
func (d *discard) WriteHeader(status int)            { d.status = status }

func serveReq(b *testing.B, h http.Handler, r benchReq) {
	h.ServeHTTP(r.w, r.r)
	if r.w.status != http.StatusOK {
		b.Fatalf("status %d", r.w.status)
	}
}

// BenchmarkHandlerParallel is the same with concurrent deliveries, as under
// load: JetStream acks overlap.
func BenchmarkHandlerParallel(b *testing.B) {
	f := newFixture(b, fixtureOpts{})
	bodies, sigs := benchDeliveries(f, b.N)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			serveOnce(b, f.handler, bodies[i], sigs[i])
		}
	})
}

func benchDeliveries(f *fixture, n int) ([][]byte, []string) {
	pad := bytes.Repeat([]byte("x"), 800)
	bodies, sigs := make([][]byte, n), make([]string, n)
	for i := range n {
		bodies[i] = fmt.Appendf(nil, `{"id":"evt_bench_%d","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{"object":"batch_prediction","id":"bpred_%d","status":"completed","metadata":{"note":"%s"}}}`, i, i, pad)
		sigs[i] = signature.Sign([]byte(testSecret), f.now.Unix(), bodies[i])
	}
	return bodies, sigs
}

func serveOnce(b *testing.B, h http.Handler, body []byte, sig string) {
	req := httptest.NewRequest(http.MethodPost, testPath, bytes.NewReader(body))
	req.Header.Set(signature.Header, sig)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}
