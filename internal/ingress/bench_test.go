package ingress_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/datagrid-relay/relay/internal/signature"
)

// BenchmarkHandler is the whole delivery path, verification to JetStream
// ack, on a realistic 1 KiB body, each iteration a new event.
func BenchmarkHandler(b *testing.B) {
	f := newFixture(b, fixtureOpts{})
	bodies, sigs := benchDeliveries(f, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		serveOnce(b, f.handler, bodies[i], sigs[i])
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
