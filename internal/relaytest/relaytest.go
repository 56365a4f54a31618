// Package relaytest holds helpers shared by the relay's tests: signed
// deliveries, and waiting on a condition with a deadline instead of
// sleeping.
package relaytest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/signature"
)

// Envelope is a realistic delivery body for event id and type.
func Envelope(id, eventType string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"event_type":%q,"timestamp":%d,"data":{"object":"batch_prediction","id":"bpred_abc123","status":"completed","results_url":"/v1/batch-predictions/bpred_abc123/results"}}`,
		id, eventType, time.Now().Unix())
}

// Response is an answer read in full.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// Post sends body to url signed with secret now, as Datagrid does.
func Post(url, secret string, body []byte) (Response, error) {
	return Send(http.MethodPost, url, signature.Sign([]byte(secret), time.Now().Unix(), body), body)
}

// Send sends body with the given signature header (none when empty).
func Send(method, url, sig string, body []byte) (Response, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set(signature.Header, sig)
	}
	return do(req)
}

// Get fetches url.
func Get(url string) (Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return Response{}, err
	}
	return do(req)
}

func do(req *http.Request) (Response, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, err
}

// WaitFor polls cond every 10ms until it returns true, failing the test if
// that takes longer than within.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitStatus waits until GET url answers status.
func WaitStatus(t testing.TB, within time.Duration, url string, status int) Response {
	t.Helper()
	var last Response
	WaitFor(t, within, fmt.Sprintf("GET %s to answer %d", url, status), func() bool {
		r, err := Get(url)
		last = r
		return err == nil && r.Status == status
	})
	return last
}

// Buffer is an io.Writer that a relay and a test may use at once, e.g. for
// the logs of a relay running in the background.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
