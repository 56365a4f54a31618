package datagrid_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
)

// testKey is long and odd enough that finding it in a message is no accident.
const testKey = "dg_live_7Qx2-test-key-9c1e7a"

const relayURL = "https://relay.example.com/webhooks/datagrid"

// startFake runs the fake API on loopback for one test.
func startFake(t *testing.T, opts datagridtest.Options) *datagridtest.Server {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	srv, err := datagridtest.Start(opts)
	if err != nil {
		t.Fatalf("start fake: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close fake: %v", err)
		}
	})
	return srv
}

// noWait skips retry delays; tests that measure delays record them instead.
func noWait(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// newClient returns a client of srv that does not wait between retries and
// has no jitter; edit changes that.
func newClient(t *testing.T, srv *datagridtest.Server, edit func(*datagrid.Config)) *datagrid.Client {
	t.Helper()
	// An own transport, closed at the end, so that no idle connection
	// outlives the test (see TestMain).
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := datagrid.Config{
		BaseURL:    srv.URL(),
		APIKey:     testKey,
		UserAgent:  "relay-test/1.0",
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		Sleep:      noWait,
		Rand:       func() float64 { return 0 },
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := datagrid.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// sleepRecorder records retry delays instead of waiting them out.
type sleepRecorder struct {
	mu  sync.Mutex
	got []time.Duration
}

func (r *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
	return ctx.Err()
}

func (r *sleepRecorder) delays() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func ptr[T any](v T) *T { return &v }

func asAPIError(t *testing.T, err error) *datagrid.APIError {
	t.Helper()
	var apiErr *datagrid.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %v (%T), want a *datagrid.APIError", err, err)
	}
	return apiErr
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     datagrid.Config
		wantErr []string // substrings; none means success
		hidden  string   // must not appear in the error
	}{
		{name: "valid", cfg: datagrid.Config{BaseURL: datagrid.DefaultBaseURL, APIKey: "k"}},
		{name: "trailing slash", cfg: datagrid.Config{BaseURL: "http://127.0.0.1:8080/v1/", APIKey: "k"}},
		{name: "no retries", cfg: datagrid.Config{BaseURL: datagrid.DefaultBaseURL, APIKey: "k", NoRetries: true}},
		{name: "empty base url", cfg: datagrid.Config{APIKey: "k"}, wantErr: []string{"base url is empty"}},
		{name: "relative base url", cfg: datagrid.Config{BaseURL: "api.datagrid.com/v1", APIKey: "k"}, wantErr: []string{"absolute http or https"}},
		{name: "other scheme", cfg: datagrid.Config{BaseURL: "ftp://api.datagrid.com/v1", APIKey: "k"}, wantErr: []string{"absolute http or https"}},
		{name: "query", cfg: datagrid.Config{BaseURL: "https://api.datagrid.com/v1?x=1", APIKey: "k"}, wantErr: []string{"query"}},
		{
			name:    "user info",
			cfg:     datagrid.Config{BaseURL: "https://bob:s3cret-pw@api.datagrid.com/v1", APIKey: "k"},
			wantErr: []string{"user info"},
			hidden:  "s3cret-pw",
		},
		{name: "empty key", cfg: datagrid.Config{BaseURL: datagrid.DefaultBaseURL}, wantErr: []string{"api key is empty"}},
		{
			name:    "key with a newline",
			cfg:     datagrid.Config{BaseURL: datagrid.DefaultBaseURL, APIKey: "secret-part\nX-Evil: 1"},
			wantErr: []string{"api key contains characters"},
			hidden:  "secret-part",
		},
		{name: "negative retries", cfg: datagrid.Config{BaseURL: datagrid.DefaultBaseURL, APIKey: "k", MaxRetries: -1}, wantErr: []string{"max retries -1 is negative"}},
		{
			name:    "every problem at once",
			cfg:     datagrid.Config{MaxRetries: -3},
			wantErr: []string{"base url is empty", "api key is empty", "max retries -3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := datagrid.New(tt.cfg)
			if len(tt.wantErr) == 0 {
				if err != nil || c == nil {
					t.Fatalf("got (%v, %v), want a client and no error", c, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got error %q, want it to contain %q", err, want)
				}
			}
			if tt.hidden != "" && strings.Contains(err.Error(), tt.hidden) {
				t.Errorf("got error %q, want it not to contain %q", err, tt.hidden)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := startFake(t, datagridtest.Options{Now: func() time.Time { return now }})
	c := newClient(t, srv, nil)
	ctx := t.Context()
	events := []string{"batch_prediction.completed", "batch_prediction.failed"}

	created, err := c.Create(ctx, relayURL, events)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := datagrid.Webhook{
		Object: "webhook", ID: created.ID, URL: relayURL, Events: events, Enabled: true,
		CreatedAt: now, UpdatedAt: now, Secret: srv.Secret(created.ID),
	}
	if created.ID == "" || !strings.HasPrefix(created.Secret, "whsec_") || !reflect.DeepEqual(created, want) {
		t.Fatalf("Create: got %+v, want %+v with an id and a whsec_ secret", created, want)
	}

	// What went over the wire, as the fake saw it.
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	for _, h := range []struct{ name, want string }{
		{"Content-Type", "application/json"},
		{"Accept", "application/json"},
		{"User-Agent", "relay-test/1.0"},
	} {
		if got := r.Header.Get(h.name); got != h.want {
			t.Errorf("request header %s: got %q, want %q", h.name, got, h.want)
		}
	}
	if !r.AuthOK {
		t.Errorf("request AuthOK: got false, want true")
	}
	wantBody := map[string]any{"url": relayURL, "events": []any{events[0], events[1]}}
	if !reflect.DeepEqual(r.Body, wantBody) {
		t.Errorf("create body: got %v, want %v", r.Body, wantBody)
	}

	got, err := c.Retrieve(ctx, created.ID)
	want.Secret = ""
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Retrieve: got (%+v, %v), want (%+v, nil)", got, err, want)
	}

	updated, err := c.Update(ctx, created.ID, datagrid.Update{Enabled: ptr(false), Events: []string{"knowledge.processing.completed"}})
	want.Enabled, want.Events = false, []string{"knowledge.processing.completed"}
	if err != nil || !reflect.DeepEqual(updated, want) {
		t.Fatalf("Update: got (%+v, %v), want (%+v, nil)", updated, err, want)
	}
	// Unset fields must not be sent, or they would overwrite Datagrid's.
	reqs = srv.Requests()
	last := reqs[len(reqs)-1]
	if _, ok := last.Body["url"]; ok || last.Method != http.MethodPatch {
		t.Errorf("update request: got %s body %v, want PATCH without url", last.Method, last.Body)
	}

	if err := c.Delete(ctx, created.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := c.Retrieve(ctx, created.ID); !datagrid.IsNotFound(err) {
		t.Fatalf("Retrieve after Delete: got %v, want a 404", err)
	}
	if err := c.Delete(ctx, created.ID); !datagrid.IsNotFound(err) {
		t.Fatalf("Delete twice: got %v, want a 404", err)
	}
}

func TestUpdateSendsOnlySetFields(t *testing.T) {
	tests := []struct {
		name     string
		update   datagrid.Update
		wantKeys []string
	}{
		{"nothing", datagrid.Update{}, nil},
		{"url", datagrid.Update{URL: ptr(relayURL)}, []string{"url"}},
		{"events", datagrid.Update{Events: []string{"batch_prediction.failed"}}, []string{"events"}},
		{"disable", datagrid.Update{Enabled: ptr(false)}, []string{"enabled"}},
		{"everything", datagrid.Update{URL: ptr(relayURL), Events: []string{"batch_prediction.failed"}, Enabled: ptr(true)}, []string{"enabled", "events", "url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			id, _ := srv.Seed(relayURL, []string{"batch_prediction.completed"}, true)
			c := newClient(t, srv, nil)
			if _, err := c.Update(t.Context(), id, tt.update); err != nil {
				t.Fatalf("Update: %v", err)
			}
			body := srv.Requests()[0].Body
			var keys []string
			for k := range body {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if body == nil || !slices.Equal(keys, tt.wantKeys) {
				t.Errorf("got body %v, want exactly the keys %v", body, tt.wantKeys)
			}
		})
	}
}

func TestList(t *testing.T) {
	tests := []struct {
		name      string
		webhooks  int
		wantPages int
	}{
		{"none", 0, 1},
		{"one", 1, 1},
		{"exactly one page", 2, 1},
		{"five over three pages", 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{PageSize: 2, MaxPageSize: 2})
			var want []string
			for i := range tt.webhooks {
				id, _ := srv.Seed(relayURL, []string{"batch_prediction.completed"}, i%2 == 0)
				want = append(want, id)
			}
			c := newClient(t, srv, nil)

			got, err := c.List(t.Context())
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var ids []string
			for _, w := range got {
				ids = append(ids, w.ID)
			}
			if !slices.Equal(ids, want) {
				t.Errorf("List: got ids %v, want %v", ids, want)
			}
			reqs := srv.Requests()
			if len(reqs) != tt.wantPages {
				t.Fatalf("got %d requests, want %d", len(reqs), tt.wantPages)
			}
			for i, r := range reqs {
				if r.Method != http.MethodGet || r.Path != "/v1/webhooks" || r.Query.Get("limit") != "100" {
					t.Errorf("request %d: got %s %s?%s, want GET /v1/webhooks?limit=100", i, r.Method, r.Path, r.Query.Encode())
				}
				if hasCursor := r.Query.Has("cursor"); hasCursor != (i > 0) {
					t.Errorf("request %d: got cursor present %v, want %v", i, hasCursor, i > 0)
				}
			}
		})
	}
}

func TestListPage(t *testing.T) {
	srv := startFake(t, datagridtest.Options{PageSize: 2})
	for range 3 {
		srv.Seed(relayURL, []string{"batch_prediction.completed"}, true)
	}
	c := newClient(t, srv, nil)
	ctx := t.Context()

	first, err := c.ListPage(ctx, "", 0)
	if err != nil || len(first.Data) != 2 || first.NextCursor == "" {
		t.Fatalf("first page: got (%d webhooks, cursor %q, %v), want (2, a cursor, nil)", len(first.Data), first.NextCursor, err)
	}
	if q := srv.Requests()[0].Query; q.Has("limit") {
		t.Errorf("limit 0: got query %q, want no limit (the API's default)", q.Encode())
	}
	second, err := c.ListPage(ctx, first.NextCursor, 0)
	if err != nil || len(second.Data) != 1 || second.NextCursor != "" {
		t.Fatalf("second page: got (%d webhooks, cursor %q, %v), want (1, none, nil)", len(second.Data), second.NextCursor, err)
	}
	_, err = c.ListPage(ctx, "", datagrid.MaxPageSize+1)
	if apiErr := asAPIError(t, err); apiErr.Status != http.StatusBadRequest {
		t.Errorf("limit %d: got status %d, want 400", datagrid.MaxPageSize+1, apiErr.Status)
	}
}

func TestListRefusesARepeatingCursor(t *testing.T) {
	srv := startFake(t, datagridtest.Options{})
	srv.FailNextWith(2, datagridtest.Fault{
		Status: http.StatusOK, ContentType: "application/json",
		Body: `{"data":[],"next_cursor":"same"}`,
	})
	c := newClient(t, srv, nil)
	_, err := c.List(t.Context())
	if err == nil || !strings.Contains(err.Error(), "repeats") {
		t.Fatalf("got %v, want an error about a repeating cursor", err)
	}
}

func TestRetries(t *testing.T) {
	t0 := time.Date(2026, 4, 10, 12, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	tests := []struct {
		name       string
		faults     func(s *datagridtest.Server)
		edit       func(c *datagrid.Config)
		wantTries  int
		wantDelays []time.Duration
		wantStatus int // 0: the call succeeds
		wantErr    string
	}{
		{
			name:       "500 twice then success",
			faults:     func(s *datagridtest.Server) { s.FailNext(2, 500, "") },
			wantTries:  3,
			wantDelays: []time.Duration{500 * ms, 1000 * ms},
		},
		{
			name:       "retries exhausted",
			faults:     func(s *datagridtest.Server) { s.FailNext(3, 502, "") },
			wantTries:  3,
			wantDelays: []time.Duration{500 * ms, 1000 * ms},
			wantStatus: 502,
			wantErr:    "datagrid create webhook: 502 Bad Gateway: simulated failure (after 3 attempts)",
		},
		{
			name:       "408 retried",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 408, "") },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name:       "409 retried",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 409, "") },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name:       "429 waits Retry-After seconds",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 429, "2") },
			wantTries:  2,
			wantDelays: []time.Duration{2 * time.Second},
		},
		{
			name:       "fractional Retry-After",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 429, "0.25") },
			wantTries:  2,
			wantDelays: []time.Duration{250 * ms},
		},
		{
			name: "retry-after-ms wins over Retry-After",
			faults: func(s *datagridtest.Server) {
				s.FailNextWith(1, datagridtest.Fault{Status: 429, Header: http.Header{"retry-after-ms": {"1500"}, "Retry-After": {"9"}}})
			},
			wantTries:  2,
			wantDelays: []time.Duration{1500 * ms},
		},
		{
			name:       "Retry-After of 60s is honoured",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 429, "60") },
			wantTries:  2,
			wantDelays: []time.Duration{60 * time.Second},
		},
		{
			name:       "Retry-After over 60s falls back to backoff",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 429, "120") },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name:       "Retry-After as an HTTP date",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 503, t0.Add(3*time.Second).Format(http.TimeFormat)) },
			edit:       func(c *datagrid.Config) { c.Now = func() time.Time { return t0 } },
			wantTries:  2,
			wantDelays: []time.Duration{3 * time.Second},
		},
		{
			name:       "Retry-After date in the past falls back to backoff",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 503, t0.Add(-time.Minute).Format(http.TimeFormat)) },
			edit:       func(c *datagrid.Config) { c.Now = func() time.Time { return t0 } },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name:       "unparsable Retry-After falls back to backoff",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 429, "soon") },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name: "x-should-retry false stops a 503 at once",
			faults: func(s *datagridtest.Server) {
				s.FailNextWith(1, datagridtest.Fault{Status: 503, Header: http.Header{"x-should-retry": {"false"}}})
			},
			wantTries:  1,
			wantStatus: 503,
		},
		{
			name: "x-should-retry true retries a 400",
			faults: func(s *datagridtest.Server) {
				s.FailNextWith(1, datagridtest.Fault{Status: 400, Header: http.Header{"x-should-retry": {"true"}}})
			},
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name:       "400 not retried",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 400, "") },
			wantTries:  1,
			wantStatus: 400,
		},
		{
			name:       "404 not retried",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 404, "") },
			wantTries:  1,
			wantStatus: 404,
		},
		{
			name:       "backoff doubles up to 8s",
			faults:     func(s *datagridtest.Server) { s.FailNext(6, 500, "") },
			edit:       func(c *datagrid.Config) { c.MaxRetries = 6 },
			wantTries:  7,
			wantDelays: []time.Duration{500 * ms, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second},
		},
		{
			name:       "jitter takes up to a quarter off",
			faults:     func(s *datagridtest.Server) { s.FailNext(2, 500, "") },
			edit:       func(c *datagrid.Config) { c.Rand = func() float64 { return 0.5 } },
			wantTries:  3,
			wantDelays: []time.Duration{437500 * time.Microsecond, 875 * ms},
		},
		{
			name:       "NoRetries",
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 500, "") },
			edit:       func(c *datagrid.Config) { c.NoRetries = true },
			wantTries:  1,
			wantStatus: 500,
		},
		{
			name:       "MaxRetries 1",
			faults:     func(s *datagridtest.Server) { s.FailNext(2, 500, "") },
			edit:       func(c *datagrid.Config) { c.MaxRetries = 1 },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
			wantStatus: 500,
		},
		{
			name:       "dropped connection retried",
			faults:     func(s *datagridtest.Server) { s.FailNextWith(1, datagridtest.Fault{Drop: true}) },
			wantTries:  2,
			wantDelays: []time.Duration{500 * ms},
		},
		{
			name: "proxy error page",
			faults: func(s *datagridtest.Server) {
				s.FailNextWith(3, datagridtest.Fault{Status: 502, ContentType: "text/html", Body: "<html>upstream down</html>"})
			},
			wantTries:  3,
			wantDelays: []time.Duration{500 * ms, 1000 * ms},
			wantStatus: 502,
			wantErr:    "datagrid create webhook: 502 Bad Gateway (after 3 attempts)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			tt.faults(srv)
			rec := &sleepRecorder{}
			c := newClient(t, srv, func(cfg *datagrid.Config) {
				cfg.Sleep = rec.sleep
				if tt.edit != nil {
					tt.edit(cfg)
				}
			})

			_, err := c.Create(t.Context(), relayURL, []string{"batch_prediction.completed"})

			if tt.wantStatus == 0 && err != nil {
				t.Fatalf("Create: got %v, want success", err)
			}
			if tt.wantStatus != 0 {
				if apiErr := asAPIError(t, err); apiErr.Status != tt.wantStatus || apiErr.Op != datagrid.OpCreate {
					t.Errorf("got status %d op %q, want %d %q", apiErr.Status, apiErr.Op, tt.wantStatus, datagrid.OpCreate)
				}
			}
			if tt.wantErr != "" && err.Error() != tt.wantErr {
				t.Errorf("got error %q, want %q", err, tt.wantErr)
			}
			if got := srv.Count(http.MethodPost, "/v1/webhooks"); got != tt.wantTries {
				t.Errorf("got %d POST /v1/webhooks, want %d", got, tt.wantTries)
			}
			if got := rec.delays(); !slices.Equal(got, tt.wantDelays) {
				t.Errorf("got delays %v, want %v", got, tt.wantDelays)
			}
			// Every attempt sends the same body, and one success makes one webhook.
			reqs := srv.Requests()
			for i, r := range reqs {
				if !reflect.DeepEqual(r.Body, reqs[0].Body) || r.Body == nil {
					t.Errorf("attempt %d sent body %v, want %v", i+1, r.Body, reqs[0].Body)
				}
			}
			wantHooks := 0
			if tt.wantStatus == 0 {
				wantHooks = 1
			}
			if got := len(srv.Webhooks()); got != wantHooks {
				t.Errorf("got %d webhooks at the fake, want %d", got, wantHooks)
			}
		})
	}
}

// TestRetryAfterIsWaited checks, on the real clock, that the client lets at
// least the server's delay pass between a 429 and its next attempt.
func TestRetryAfterIsWaited(t *testing.T) {
	tests := []struct {
		name  string
		fault datagridtest.Fault
		want  time.Duration
	}{
		{"Retry-After seconds", datagridtest.Fault{Status: 429, Header: http.Header{"Retry-After": {"1"}}}, time.Second},
		{"retry-after-ms", datagridtest.Fault{Status: 429, Header: http.Header{"retry-after-ms": {"150"}}}, 150 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			srv.FailNextWith(1, tt.fault)
			c := newClient(t, srv, func(cfg *datagrid.Config) { cfg.Sleep = nil })

			if _, err := c.Create(t.Context(), relayURL, []string{"batch_prediction.completed"}); err != nil {
				t.Fatalf("Create: %v", err)
			}
			limited := srv.RateLimited()
			reqs := srv.Requests()
			if len(limited) != 1 || len(reqs) != 2 {
				t.Fatalf("got %d requests of which %d answered 429, want 2 and 1", len(reqs), len(limited))
			}
			if gap := reqs[1].Received.Sub(limited[0].Answered); gap < tt.want {
				t.Errorf("got %v between the 429 and the retry, want at least %v", gap, tt.want)
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	tests := []struct {
		name       string
		key        string
		faults     func(s *datagridtest.Server)
		wantStatus int
		wantInMsg  []string
	}{
		{
			name:       "wrong key",
			key:        "dg_live_wrong-key-4242",
			wantStatus: 401,
			wantInMsg:  []string{"datagrid create webhook: 401 Unauthorized", "invalid API key"},
		},
		{
			name:       "forbidden",
			key:        testKey,
			faults:     func(s *datagridtest.Server) { s.FailNext(1, 403, "") },
			wantStatus: 403,
			wantInMsg:  []string{"403 Forbidden"},
		},
		{
			name: "server quotes the key",
			key:  testKey,
			faults: func(s *datagridtest.Server) {
				s.FailNextWith(1, datagridtest.Fault{Status: 401, Detail: "key " + testKey + " was revoked"})
			},
			wantStatus: 401,
			wantInMsg:  []string{"401 Unauthorized", "key [REDACTED] was revoked"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			if tt.faults != nil {
				tt.faults(srv)
			}
			c := newClient(t, srv, func(cfg *datagrid.Config) { cfg.APIKey = tt.key })

			_, err := c.Create(t.Context(), relayURL, []string{"batch_prediction.completed"})

			if !datagrid.IsAuth(err) || datagrid.IsNotFound(err) {
				t.Fatalf("got %v, want IsAuth true and IsNotFound false", err)
			}
			if apiErr := asAPIError(t, err); apiErr.Status != tt.wantStatus {
				t.Errorf("got status %d, want %d", apiErr.Status, tt.wantStatus)
			}
			for _, want := range tt.wantInMsg {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got error %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), tt.key) {
				t.Errorf("got error %q, want it without the API key", err)
			}
			if got := len(srv.Requests()); got != 1 {
				t.Errorf("got %d requests, want 1 (a refused key is not retried)", got)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	const id = "wh_missing"
	tests := []struct {
		op   string
		call func(ctx context.Context, c *datagrid.Client) error
	}{
		{datagrid.OpRetrieve, func(ctx context.Context, c *datagrid.Client) error {
			_, err := c.Retrieve(ctx, id)
			return err
		}},
		{datagrid.OpUpdate, func(ctx context.Context, c *datagrid.Client) error {
			_, err := c.Update(ctx, id, datagrid.Update{Enabled: ptr(true)})
			return err
		}},
		{datagrid.OpDelete, func(ctx context.Context, c *datagrid.Client) error { return c.Delete(ctx, id) }},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			c := newClient(t, srv, nil)
			err := tt.call(t.Context(), c)
			if !datagrid.IsNotFound(err) || datagrid.IsAuth(err) {
				t.Fatalf("got %v, want IsNotFound true and IsAuth false", err)
			}
			if apiErr := asAPIError(t, err); apiErr.Op != tt.op || !strings.Contains(apiErr.Detail, id) {
				t.Errorf("got op %q detail %q, want op %q and a detail naming %s", apiErr.Op, apiErr.Detail, tt.op, id)
			}
			if got := len(srv.Requests()); got != 1 {
				t.Errorf("got %d requests, want 1", got)
			}
		})
	}
}

func TestEmptyIDSendsNothing(t *testing.T) {
	srv := startFake(t, datagridtest.Options{})
	c := newClient(t, srv, nil)
	if _, err := c.Retrieve(t.Context(), ""); err == nil {
		t.Errorf("Retrieve(\"\"): got no error, want one")
	}
	if err := c.Delete(t.Context(), ""); err == nil {
		t.Errorf("Delete(\"\"): got no error, want one")
	}
	if got := len(srv.Requests()); got != 0 {
		t.Errorf("got %d requests, want 0", got)
	}
}

func TestIDsAreEscaped(t *testing.T) {
	const odd = "wh/odd id?#%"
	srv := startFake(t, datagridtest.Options{NewID: func() string { return odd }})
	c := newClient(t, srv, nil)
	ctx := t.Context()

	created, err := c.Create(ctx, relayURL, []string{"batch_prediction.completed"})
	if err != nil || created.ID != odd {
		t.Fatalf("Create: got (%q, %v), want (%q, nil)", created.ID, err, odd)
	}
	if got, err := c.Retrieve(ctx, odd); err != nil || got.ID != odd {
		t.Fatalf("Retrieve: got (%q, %v), want (%q, nil)", got.ID, err, odd)
	}
	if err := c.Delete(ctx, odd); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := srv.Count(http.MethodDelete, "/v1/webhooks/"+odd); got != 1 {
		t.Errorf("got %d DELETE of the escaped id, want 1", got)
	}
}

func TestContextEndsTheWait(t *testing.T) {
	tests := []struct {
		name string
		// cancelOnAnswer cancels once the first answer is in; otherwise
		// a short deadline ends the context.
		cancelOnAnswer bool
		setup          func(s *datagridtest.Server)
		wantErr        error
	}{
		{"deadline during a 30s Retry-After", false, func(s *datagridtest.Server) { s.FailNext(1, 429, "30") }, context.DeadlineExceeded},
		{"cancel during a 30s Retry-After", true, func(s *datagridtest.Server) { s.FailNext(1, 429, "30") }, context.Canceled},
		{"deadline during a slow answer", false, func(s *datagridtest.Server) { s.SetLatency(30 * time.Second) }, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			tt.setup(srv)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			answered := make(chan struct{})
			var once sync.Once
			if tt.cancelOnAnswer {
				go func() {
					<-answered
					cancel()
				}()
			} else {
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			}
			c := newClient(t, srv, func(cfg *datagrid.Config) {
				cfg.Sleep = nil // the real wait
				cfg.Observe = func(string, int, time.Duration, error) { once.Do(func() { close(answered) }) }
			})

			start := time.Now()
			_, err := c.Create(ctx, relayURL, []string{"batch_prediction.completed"})
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("got %v until Create returned, want well under the server's 30s", elapsed)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want an error wrapping %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), testKey) {
				t.Errorf("got error %q, want it without the API key", err)
			}
			// The fake may log the request a moment after the client gave up.
			waitFor(t, func() bool { return srv.Count(http.MethodPost, "/v1/webhooks") >= 1 })
			if got := srv.Count(http.MethodPost, "/v1/webhooks"); got != 1 {
				t.Errorf("got %d POST /v1/webhooks, want 1", got)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition still false after 2s")
		}
		<-tick.C
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name       string
		call       func(ctx context.Context, c *datagrid.Client, id string) error
		wantDetail string
	}{
		{"http url", func(ctx context.Context, c *datagrid.Client, _ string) error {
			_, err := c.Create(ctx, "http://relay.example.com/hook", []string{"batch_prediction.completed"})
			return err
		}, "absolute HTTPS URL"},
		{"missing url", func(ctx context.Context, c *datagrid.Client, _ string) error {
			_, err := c.Create(ctx, "", []string{"batch_prediction.completed"})
			return err
		}, "url is required"},
		{"empty events", func(ctx context.Context, c *datagrid.Client, _ string) error {
			_, err := c.Create(ctx, relayURL, []string{})
			return err
		}, "at least one event type"},
		{"nil events", func(ctx context.Context, c *datagrid.Client, _ string) error {
			_, err := c.Create(ctx, relayURL, nil)
			return err
		}, "events is required"},
		{"unknown event", func(ctx context.Context, c *datagrid.Client, _ string) error {
			_, err := c.Create(ctx, relayURL, []string{"batch_prediction.completed", "batch_prediction.exploded"})
			return err
		}, `events[1]: unknown event type "batch_prediction.exploded"`},
		{"update to an http url", func(ctx context.Context, c *datagrid.Client, id string) error {
			_, err := c.Update(ctx, id, datagrid.Update{URL: ptr("http://relay.example.com/hook")})
			return err
		}, "absolute HTTPS URL"},
		{"update to an unknown event", func(ctx context.Context, c *datagrid.Client, id string) error {
			_, err := c.Update(ctx, id, datagrid.Update{Events: []string{"nope"}})
			return err
		}, `unknown event type "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, datagridtest.Options{})
			id, _ := srv.Seed(relayURL, []string{"batch_prediction.completed"}, true)
			c := newClient(t, srv, nil)

			err := tt.call(t.Context(), c, id)

			apiErr := asAPIError(t, err)
			if apiErr.Status != http.StatusBadRequest && apiErr.Status != http.StatusUnprocessableEntity {
				t.Errorf("got status %d, want 400 or 422", apiErr.Status)
			}
			if !strings.Contains(apiErr.Detail, tt.wantDetail) || !strings.Contains(err.Error(), tt.wantDetail) {
				t.Errorf("got detail %q (error %q), want both to contain %q", apiErr.Detail, err, tt.wantDetail)
			}
			if got := len(srv.Requests()); got != 1 {
				t.Errorf("got %d requests, want 1 (a refused request is not retried)", got)
			}
		})
	}
}

func TestTransportErrors(t *testing.T) {
	// A port that was just free: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var statuses []int
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := datagrid.New(datagrid.Config{
		BaseURL:    "http://" + addr + "/v1",
		APIKey:     testKey,
		HTTPClient: &http.Client{Transport: tr},
		Sleep:      noWait,
		Observe: func(op string, status int, _ time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if op == datagrid.OpList && err != nil {
				statuses = append(statuses, status)
			}
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	_, err = c.List(t.Context())

	var netErr net.Error
	if !errors.As(err, &netErr) {
		t.Errorf("got %v (%T), want an error wrapping a net.Error", err, err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "datagrid list webhooks: ") || !strings.HasSuffix(msg, "(after 3 attempts)") || strings.Contains(msg, testKey) {
		t.Errorf("got error %q, want it to start with the operation, end with the attempts and hide the key", msg)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(statuses, []int{0, 0, 0}) {
		t.Errorf("got observed statuses %v, want [0 0 0]", statuses)
	}
}

func TestBadSuccessBody(t *testing.T) {
	srv := startFake(t, datagridtest.Options{})
	srv.FailNextWith(1, datagridtest.Fault{Status: http.StatusOK, ContentType: "application/json", Body: "{not json"})
	c := newClient(t, srv, nil)
	_, err := c.Retrieve(t.Context(), "wh_1")
	if err == nil || !strings.Contains(err.Error(), "datagrid retrieve webhook: decode answer") {
		t.Errorf("got %v, want a decode error", err)
	}
	if got := len(srv.Requests()); got != 1 {
		t.Errorf("got %d requests, want 1", got)
	}
}

func TestObserve(t *testing.T) {
	type call struct {
		op     string
		status int
		failed bool
	}
	srv := startFake(t, datagridtest.Options{})
	var mu sync.Mutex
	var got []call
	c := newClient(t, srv, func(cfg *datagrid.Config) {
		cfg.Observe = func(op string, status int, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				t.Errorf("%s: got duration %v, want > 0", op, d)
			}
			got = append(got, call{op, status, err != nil})
		}
	})
	ctx := t.Context()

	w, err := c.Create(ctx, relayURL, []string{"batch_prediction.completed"})
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext(1, 503, "")
	if _, err := c.Retrieve(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, w.ID, datagrid.Update{Enabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, w.ID); err != nil {
		t.Fatal(err)
	}

	want := []call{
		{datagrid.OpCreate, 201, false},
		{datagrid.OpRetrieve, 503, true},
		{datagrid.OpRetrieve, 200, false},
		{datagrid.OpUpdate, 200, false},
		{datagrid.OpList, 200, false},
		{datagrid.OpDelete, 204, false},
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("got observations %v, want %v", got, want)
	}
	ops := datagrid.Ops()
	for _, w := range want {
		if !slices.Contains(ops, w.op) {
			t.Errorf("Ops() = %v, want it to contain %q", ops, w.op)
		}
	}
	if len(ops) != 5 {
		t.Errorf("got %d ops, want 5", len(ops))
	}
}

func TestAPIErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *datagrid.APIError
		want string
	}{
		{
			"title repeats the status text",
			&datagrid.APIError{Status: 401, Title: "Unauthorized", Detail: "invalid API key", Op: datagrid.OpCreate},
			"datagrid create webhook: 401 Unauthorized: invalid API key",
		},
		{
			"own title and detail",
			&datagrid.APIError{Status: 429, Title: "Rate limited", Detail: "slow down", Op: datagrid.OpList},
			"datagrid list webhooks: 429 Too Many Requests: Rate limited: slow down",
		},
		{
			"no detail",
			&datagrid.APIError{Status: 404, Title: "Not Found", Op: datagrid.OpRetrieve},
			"datagrid retrieve webhook: 404 Not Found",
		},
		{
			"unknown status",
			&datagrid.APIError{Status: 599, Title: "Odd", Op: datagrid.OpDelete},
			"datagrid delete webhook: 599: Odd",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIsAuthIsNotFound(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		auth, absent bool
	}{
		{"nil", nil, false, false},
		{"plain error", errors.New("401"), false, false},
		{"401", &datagrid.APIError{Status: 401}, true, false},
		{"403 wrapped", fmt.Errorf("register: %w", &datagrid.APIError{Status: 403}), true, false},
		{"404 wrapped", fmt.Errorf("reconcile: %w", &datagrid.APIError{Status: 404}), false, true},
		{"500", &datagrid.APIError{Status: 500}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := datagrid.IsAuth(tt.err); got != tt.auth {
				t.Errorf("IsAuth: got %v, want %v", got, tt.auth)
			}
			if got := datagrid.IsNotFound(tt.err); got != tt.absent {
				t.Errorf("IsNotFound: got %v, want %v", got, tt.absent)
			}
		})
	}
}
