package datagridtest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/relaytest"
)

const testKey = "dg_live_fake-test-key-31f0"

const hookURL = "https://relay.example.com/webhooks/datagrid"

// fake is a started server and a plain HTTP client for it: these tests talk
// raw HTTP so that they check the wire, not the datagrid client.
type fake struct {
	*datagridtest.Server
	t      *testing.T
	client *http.Client
}

func start(t *testing.T, opts datagridtest.Options) *fake {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	srv, err := datagridtest.Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &fake{Server: srv, t: t, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// reply is an answer, read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value.
func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer body %q: %v", r.body, err)
	}
	return m
}

// call sends method path (relative to the base URL) with the right key.
func (f *fake) call(method, path, body string) reply {
	f.t.Helper()
	return f.callAs("Bearer "+testKey, method, path, body)
}

// callAs sends a request with the given Authorization header ("" for none).
func (f *fake) callAs(authz, method, path, body string) reply {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(f.t.Context(), method, f.URL()+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// create makes a webhook through the API and returns the answer's fields.
func (f *fake) create(events ...string) map[string]any {
	f.t.Helper()
	body, _ := json.Marshal(map[string]any{"url": hookURL, "events": events})
	r := f.call(http.MethodPost, "/webhooks", string(body))
	if r.status != http.StatusCreated {
		f.t.Fatalf("create: got %d %s, want 201", r.status, r.body)
	}
	return r.json(f.t)
}

// checkProblem checks that r is a problem-details answer with status.
func checkProblem(t *testing.T, r reply, status int, detail string) {
	t.Helper()
	if r.status != status {
		t.Errorf("got status %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("got Content-Type %q, want application/problem+json", ct)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Status != status || p.Title != http.StatusText(status) || p.Type == "" || p.Detail == "" {
		t.Errorf("got problem %+v, want status %d, title %q, a type and a detail", p, status, http.StatusText(status))
	}
	if !strings.Contains(p.Detail, detail) {
		t.Errorf("got detail %q, want it to contain %q", p.Detail, detail)
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name            string
		authz           string
		wantStatus      int
		wantDetail      string
		hasAuth, authOK bool
	}{
		{"no header", "", 401, "missing Authorization", false, false},
		{"wrong key", "Bearer dg_live_other", 401, "invalid API key", true, false},
		{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testKey)), 401, "invalid API key", true, false},
		{"bare key", testKey, 401, "invalid API key", true, false},
		{"right key", "Bearer " + testKey, 200, "", true, true},
		{"scheme in lower case", "bearer " + testKey, 200, "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, datagridtest.Options{})
			r := f.callAs(tt.authz, http.MethodGet, "/webhooks", "")
			if tt.wantStatus == http.StatusUnauthorized {
				checkProblem(t, r, 401, tt.wantDetail)
				if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("got WWW-Authenticate %q, want Bearer", got)
				}
				if bytes.Contains(r.body, []byte(testKey)) {
					t.Errorf("got body %s, want it without the key", r.body)
				}
			} else if r.status != tt.wantStatus {
				t.Errorf("got status %d, want %d", r.status, tt.wantStatus)
			}
			reqs := f.Requests()
			if len(reqs) != 1 || reqs[0].HasAuth != tt.hasAuth || reqs[0].AuthOK != tt.authOK {
				t.Fatalf("got log %+v, want one request with HasAuth %v AuthOK %v", reqs, tt.hasAuth, tt.authOK)
			}
			if got := fmt.Sprintf("%#v", reqs); strings.Contains(got, testKey) {
				t.Errorf("the request log holds the key: %s", got)
			}
		})
	}
}

func TestEmptyAPIKeyAcceptsNothing(t *testing.T) {
	srv := datagridtest.NewServer(datagridtest.Options{})
	for _, authz := range []string{"", "Bearer ", "Bearer x"} {
		req := httptest.NewRequest(http.MethodGet, "/v1/webhooks", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: got %d, want 401", authz, rec.Code)
		}
	}
}

func TestProblemDetails(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantDetail, wantAllow    string
	}{
		{"unknown endpoint", "GET", "/nope", "", 404, "no such endpoint", ""},
		{"unknown id", "GET", "/webhooks/wh_nope", "", 404, `"wh_nope"`, ""},
		{"trailing slash", "GET", "/webhooks/", "", 404, "no such endpoint", ""},
		{"nested path", "GET", "/webhooks/a/b", "", 404, "no such endpoint", ""},
		{"PUT collection", "PUT", "/webhooks", "{}", 405, "GET, POST", "GET, POST"},
		{"POST active", "POST", "/webhooks/active", "{}", 405, "GET", "GET"},
		{"POST one webhook", "POST", "/webhooks/wh_1", "{}", 405, "GET, PATCH, DELETE", "GET, PATCH, DELETE"},
		{"bad limit", "GET", "/webhooks?limit=0", "", 400, "limit", ""},
		{"bad cursor", "GET", "/webhooks?cursor=garbage", "", 400, "cursor", ""},
		{"malformed body", "POST", "/webhooks", "{", 400, "not a valid JSON object", ""},
		{"empty body", "POST", "/webhooks", "", 400, "empty", ""},
		{"invalid body", "POST", "/webhooks", `{"url":"http://x.example","events":["batch_prediction.completed"]}`, 422, "HTTPS", ""},
		{"huge body", "POST", "/webhooks", `{"url":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "exceeds", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, datagridtest.Options{})
			r := f.call(tt.method, tt.path, tt.body)
			checkProblem(t, r, tt.wantStatus, tt.wantDetail)
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("got Allow %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name, body string
		wantStatus int
		wantDetail string
	}{
		{"valid", `{"url":"https://a.example/x","events":["batch_prediction.completed"]}`, 201, ""},
		{"all five events", `{"url":"https://a.example/x","events":["knowledge.processing.completed","batch_prediction.completed","batch_prediction.failed","batch_prediction.expired","batch_prediction.cancelled"]}`, 201, ""},
		{"unknown fields are fine", `{"url":"https://a.example/x","events":["batch_prediction.failed"],"description":"x"}`, 201, ""},
		{"http url", `{"url":"http://a.example/x","events":["batch_prediction.completed"]}`, 422, "absolute HTTPS URL"},
		{"relative url", `{"url":"/x","events":["batch_prediction.completed"]}`, 422, "absolute HTTPS URL"},
		{"missing url", `{"events":["batch_prediction.completed"]}`, 422, "url is required"},
		{"empty url", `{"url":"","events":["batch_prediction.completed"]}`, 422, "url is required"},
		{"missing events", `{"url":"https://a.example/x"}`, 422, "events is required"},
		{"empty events", `{"url":"https://a.example/x","events":[]}`, 422, "at least one"},
		{"unknown event", `{"url":"https://a.example/x","events":["batch_prediction.completed","nope"]}`, 422, `events[1]: unknown event type "nope"`},
		{"every problem at once", `{"url":"ftp://a","events":[]}`, 422, "absolute HTTPS URL, got \"ftp://a\"; events must"},
		{"array body", `[]`, 400, "not a valid JSON object"},
		{"url of the wrong type", `{"url":5,"events":["batch_prediction.completed"]}`, 400, "not a valid JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, datagridtest.Options{})
			r := f.call(http.MethodPost, "/webhooks", tt.body)
			if tt.wantStatus != http.StatusCreated {
				checkProblem(t, r, tt.wantStatus, tt.wantDetail)
				if got := len(f.Webhooks()); got != 0 {
					t.Errorf("got %d webhooks, want 0", got)
				}
				return
			}
			if r.status != tt.wantStatus || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %q %s, want %d application/json", r.status, r.header.Get("Content-Type"), r.body, tt.wantStatus)
			}
			w := r.json(t)
			if w["object"] != "webhook" || w["enabled"] != true || w["url"] == nil || w["created_at"] != w["updated_at"] {
				t.Errorf("got %v, want an enabled webhook object", w)
			}
		})
	}
}

func TestSecretOnlyOnCreate(t *testing.T) {
	f := start(t, datagridtest.Options{})
	created := f.create("batch_prediction.completed")
	id, _ := created["id"].(string)
	secret, _ := created["secret"].(string)
	if !regexp.MustCompile(`^whsec_[0-9a-f]{32}$`).MatchString(secret) {
		t.Errorf("got secret %q, want whsec_ and 32 hex digits", secret)
	}
	if got := f.Secret(id); got != secret {
		t.Errorf("Secret(id): got %q, want %q", got, secret)
	}

	for _, c := range []struct{ method, path, body string }{
		{"GET", "/webhooks/" + id, ""},
		{"PATCH", "/webhooks/" + id, `{"enabled":true}`},
		{"GET", "/webhooks", ""},
		{"GET", "/webhooks/active?event_type=batch_prediction.completed", ""},
	} {
		r := f.call(c.method, c.path, c.body)
		if r.status != http.StatusOK {
			t.Fatalf("%s %s: got %d %s, want 200", c.method, c.path, r.status, r.body)
		}
		if bytes.Contains(r.body, []byte(`"secret"`)) || bytes.Contains(r.body, []byte(secret)) {
			t.Errorf("%s %s: got %s, want no secret", c.method, c.path, r.body)
		}
	}
	if got := f.Webhooks()[0].Secret; got != "" {
		t.Errorf("Webhooks(): got secret %q, want none", got)
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name, body string
		wantStatus int
		check      func(w map[string]any) bool
		wantDetail string
	}{
		{"disable", `{"enabled":false}`, 200, func(w map[string]any) bool { return w["enabled"] == false }, ""},
		{"events", `{"events":["batch_prediction.failed"]}`, 200, func(w map[string]any) bool {
			return fmt.Sprint(w["events"]) == "[batch_prediction.failed]"
		}, ""},
		{"url", `{"url":"https://b.example/y"}`, 200, func(w map[string]any) bool { return w["url"] == "https://b.example/y" }, ""},
		{"nothing", `{}`, 200, func(w map[string]any) bool { return w["url"] == hookURL && w["enabled"] == true }, ""},
		{"http url", `{"url":"http://b.example/y"}`, 422, nil, "absolute HTTPS URL"},
		{"empty events", `{"events":[]}`, 422, nil, "at least one"},
		{"unknown event", `{"events":["nope"]}`, 422, nil, `unknown event type "nope"`},
		{"malformed", `{"enabled":`, 400, nil, "not a valid JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var mu sync.Mutex
			f := start(t, datagridtest.Options{Now: func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				now = now.Add(time.Minute)
				return now
			}})
			id, _ := f.Seed(hookURL, []string{"batch_prediction.completed"}, true)
			before, _ := f.Webhook(id)

			r := f.call(http.MethodPatch, "/webhooks/"+id, tt.body)

			if tt.wantStatus != http.StatusOK {
				checkProblem(t, r, tt.wantStatus, tt.wantDetail)
				if after, _ := f.Webhook(id); !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("got updated_at %v after a refused update, want %v", after.UpdatedAt, before.UpdatedAt)
				}
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("got %d %s, want 200", r.status, r.body)
			}
			w := r.json(t)
			if !tt.check(w) || w["updated_at"] == w["created_at"] {
				t.Errorf("got %v, want the change applied and updated_at moved", w)
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		f := start(t, datagridtest.Options{})
		checkProblem(t, f.call(http.MethodPatch, "/webhooks/wh_nope", `{"enabled":true}`), 404, "wh_nope")
	})
}

func TestDelete(t *testing.T) {
	f := start(t, datagridtest.Options{})
	id, _ := f.Seed(hookURL, []string{"batch_prediction.completed"}, true)

	r := f.call(http.MethodDelete, "/webhooks/"+id, "")
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("DELETE: got %d %q, want 204 and no body", r.status, r.body)
	}
	checkProblem(t, f.call(http.MethodGet, "/webhooks/"+id, ""), 404, id)
	checkProblem(t, f.call(http.MethodDelete, "/webhooks/"+id, ""), 404, id)
	if got := len(f.Webhooks()); got != 0 {
		t.Errorf("got %d webhooks, want 0", got)
	}
}

// listIDs follows every page of GET /webhooks with the given limit (none
// when empty) and returns the ids per page.
func listIDs(t *testing.T, f *fake, limit string) [][]string {
	t.Helper()
	var pages [][]string
	cursor := ""
	for range 100 {
		path := "/webhooks?"
		if limit != "" {
			path += "limit=" + limit + "&"
		}
		if cursor != "" {
			path += "cursor=" + cursor
		}
		r := f.call(http.MethodGet, path, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: got %d %s, want 200", path, r.status, r.body)
		}
		var page struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil || page.Data == nil {
			t.Fatalf("page %s: got %v, want data and next_cursor", r.body, err)
		}
		if !bytes.Contains(r.body, []byte(`"next_cursor":`)) {
			t.Fatalf("page %s: want next_cursor present, null on the last page", r.body)
		}
		var ids []string
		for _, w := range page.Data {
			ids = append(ids, w.ID)
		}
		pages = append(pages, ids)
		if page.NextCursor == nil {
			return pages
		}
		cursor = *page.NextCursor
	}
	t.Fatalf("more than 100 pages")
	return nil
}

func TestListPages(t *testing.T) {
	seed := func(f *fake, n int) []string {
		var ids []string
		for i := range n {
			id, _ := f.Seed(hookURL, []string{"batch_prediction.completed"}, i%3 != 0)
			ids = append(ids, id)
		}
		return ids
	}
	sizes := func(pages [][]string) []int {
		var out []int
		for _, p := range pages {
			out = append(out, len(p))
		}
		return out
	}
	tests := []struct {
		name      string
		opts      datagridtest.Options
		webhooks  int
		limit     string
		wantSizes []int
	}{
		{"empty", datagridtest.Options{}, 0, "", []int{0}},
		{"default page size is 50", datagridtest.Options{}, 60, "", []int{50, 10}},
		{"PageSize sets the default", datagridtest.Options{PageSize: 2}, 5, "", []int{2, 2, 1}},
		{"limit wins over PageSize", datagridtest.Options{PageSize: 2}, 5, "4", []int{4, 1}},
		{"limit 1", datagridtest.Options{}, 3, "1", []int{1, 1, 1}},
		{"limit 100", datagridtest.Options{}, 120, "100", []int{100, 20}},
		{"MaxPageSize caps the limit", datagridtest.Options{MaxPageSize: 2}, 5, "100", []int{2, 2, 1}},
		{"exact multiple", datagridtest.Options{PageSize: 2}, 4, "", []int{2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, tt.opts)
			want := seed(f, tt.webhooks)
			pages := listIDs(t, f, tt.limit)
			if got := sizes(pages); !slices.Equal(got, tt.wantSizes) {
				t.Errorf("got page sizes %v, want %v", got, tt.wantSizes)
			}
			if got := slices.Concat(pages...); !slices.Equal(got, want) {
				t.Errorf("got ids %v, want %v in creation order", got, want)
			}
		})
	}
}

func TestListBounds(t *testing.T) {
	valid := base64.RawURLEncoding.EncodeToString([]byte("after:1"))
	tests := []struct {
		query      string
		wantStatus int
	}{
		{"limit=1", 200},
		{"limit=100", 200},
		{"limit=0", 400},
		{"limit=101", 400},
		{"limit=-1", 400},
		{"limit=abc", 400},
		{"limit=", 400},
		{"cursor=", 200},
		{"cursor=" + valid, 200},
		{"cursor=garbage", 400},
		{"cursor=%21%21", 400},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("after:999")), 400},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("before:1")), 400},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			f := start(t, datagridtest.Options{})
			f.Seed(hookURL, []string{"batch_prediction.completed"}, true)
			r := f.call(http.MethodGet, "/webhooks?"+tt.query, "")
			if tt.wantStatus == http.StatusOK {
				if r.status != http.StatusOK {
					t.Errorf("got %d %s, want 200", r.status, r.body)
				}
				return
			}
			checkProblem(t, r, tt.wantStatus, "")
		})
	}
}

// TestListIsStableWhileChanging checks that deleting and creating webhooks
// between pages neither repeats nor skips the ones that stay, even when the
// webhook a cursor points after is gone.
func TestListIsStableWhileChanging(t *testing.T) {
	f := start(t, datagridtest.Options{PageSize: 2})
	var ids []string
	for range 5 {
		id, _ := f.Seed(hookURL, []string{"batch_prediction.completed"}, true)
		ids = append(ids, id)
	}
	page := func(cursor string) (got []string, next string) {
		t.Helper()
		r := f.call(http.MethodGet, "/webhooks?cursor="+cursor, "")
		var p struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil || r.status != http.StatusOK {
			t.Fatalf("got %d %s (%v), want a page", r.status, r.body, err)
		}
		for _, w := range p.Data {
			got = append(got, w.ID)
		}
		return got, p.NextCursor
	}

	first, next := page("")
	// The cursor points after ids[1]: remove it and the one after it, and
	// add one at the end.
	f.Remove(ids[1])
	f.Remove(ids[2])
	added, _ := f.Seed(hookURL, []string{"batch_prediction.completed"}, true)
	second, next := page(next)
	third, next := page(next)

	got := [][]string{first, second, third}
	want := [][]string{{ids[0], ids[1]}, {ids[3], ids[4]}, {added}}
	if !slices.EqualFunc(got, want, slices.Equal) || next != "" {
		t.Errorf("got pages %v (last cursor %q), want %v and no cursor", got, next, want)
	}
}

func TestActive(t *testing.T) {
	f := start(t, datagridtest.Options{})
	want, _ := f.Seed(hookURL, []string{"batch_prediction.completed", "batch_prediction.failed"}, true)
	f.Seed(hookURL, []string{"batch_prediction.completed"}, false)
	f.Seed("https://other.example/x", []string{"batch_prediction.failed"}, true)

	r := f.call(http.MethodGet, "/webhooks/active?event_type=batch_prediction.completed", "")
	var l struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &l); err != nil || r.status != http.StatusOK {
		t.Fatalf("got %d %s (%v), want 200 and a list", r.status, r.body, err)
	}
	if l.Object != "list" || len(l.Data) != 1 || l.Data[0].ID != want {
		t.Errorf("got %s, want a list holding only %s", r.body, want)
	}
	r = f.call(http.MethodGet, "/webhooks/active?event_type=knowledge.processing.completed", "")
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"data":[]`)) {
		t.Errorf("got %d %s, want 200 and an empty data array", r.status, r.body)
	}
	checkProblem(t, f.call(http.MethodGet, "/webhooks/active", ""), 400, "event_type is required")
	checkProblem(t, f.call(http.MethodGet, "/webhooks/active?event_type=nope", ""), 422, `"nope"`)
}

func TestFaults(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.FailNext(2, http.StatusServiceUnavailable, "")
	f.FailNext(1, http.StatusTooManyRequests, "7")
	f.FailNextWith(1, datagridtest.Fault{Status: 503, Header: http.Header{"retry-after-ms": {"250"}, "x-should-retry": {"false"}}})
	f.FailNextWith(1, datagridtest.Fault{Status: 502, Body: "<html>down</html>", ContentType: "text/html"})

	for range 2 {
		checkProblem(t, f.call(http.MethodGet, "/webhooks", ""), 503, "simulated failure")
	}
	r := f.call(http.MethodGet, "/webhooks", "")
	checkProblem(t, r, 429, "rate limit")
	if got := r.header.Get("Retry-After"); got != "7" {
		t.Errorf("got Retry-After %q, want 7", got)
	}
	r = f.call(http.MethodGet, "/webhooks", "")
	if r.header.Get("Retry-After-Ms") != "250" || r.header.Get("X-Should-Retry") != "false" {
		t.Errorf("got headers %v, want retry-after-ms 250 and x-should-retry false", r.header)
	}
	r = f.call(http.MethodGet, "/webhooks", "")
	if r.status != 502 || string(r.body) != "<html>down</html>" || r.header.Get("Content-Type") != "text/html" {
		t.Errorf("got %d %q %q, want the proxy page", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r := f.call(http.MethodGet, "/webhooks", ""); r.status != http.StatusOK {
		t.Errorf("after the faults: got %d, want 200", r.status)
	}

	limited := f.RateLimited()
	if len(limited) != 1 || limited[0].RetryAfter != "7" || limited[0].Answered.Before(limited[0].Received) {
		t.Errorf("got rate-limited log %+v, want one entry with Retry-After 7", limited)
	}

	f.FailNext(3, 500, "")
	f.ClearFaults()
	if r := f.call(http.MethodGet, "/webhooks", ""); r.status != http.StatusOK {
		t.Errorf("after ClearFaults: got %d, want 200", r.status)
	}
}

func TestDropFault(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.FailNextWith(1, datagridtest.Fault{Drop: true})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL()+"/webhooks", strings.NewReader(`{}`))
	resp, err := f.client.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want a connection error", resp.StatusCode)
	}
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].Status != 0 || reqs[0].Answered.IsZero() {
		t.Errorf("got log %+v, want one dropped request (status 0, answered)", reqs)
	}
}

func TestLatency(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.SetLatency(100 * time.Millisecond)
	begin := time.Now()
	f.call(http.MethodGet, "/webhooks", "")
	if got := time.Since(begin); got < 100*time.Millisecond {
		t.Errorf("got an answer after %v, want at least 100ms", got)
	}
	f.SetLatency(0)
	reqs := f.Requests()
	if got := reqs[0].Answered.Sub(reqs[0].Received); got < 100*time.Millisecond {
		t.Errorf("got %v between Received and Answered, want at least 100ms", got)
	}
}

func TestRequestLog(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.call(http.MethodPost, "/webhooks?x=1", `{"url":"https://a.example/x","events":["batch_prediction.completed"],"extra":{"a":1}}`)
	f.call(http.MethodGet, "/webhooks/wh%2Fodd", "")

	reqs := f.Requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/v1/webhooks" || r.Query.Get("x") != "1" || r.Status != 201 {
		t.Errorf("got %s %s?%s → %d, want POST /v1/webhooks?x=1 → 201", r.Method, r.Path, r.Query.Encode(), r.Status)
	}
	if r.Body["url"] != "https://a.example/x" || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "" {
		t.Errorf("got body %v header %v, want the decoded body and no Authorization", r.Body, r.Header)
	}
	if r.Received.IsZero() || r.Answered.Before(r.Received) {
		t.Errorf("got received %v answered %v, want both set in order", r.Received, r.Answered)
	}
	if reqs[1].Path != "/v1/webhooks/wh/odd" || reqs[1].Status != 404 {
		t.Errorf("got %s → %d, want the unescaped path → 404", reqs[1].Path, reqs[1].Status)
	}
	if got := f.Count("POST", "/v1/webhooks"); got != 1 {
		t.Errorf("Count: got %d, want 1", got)
	}

	// A copy: changing it does not change the log.
	reqs[0].Body["url"] = "changed"
	reqs[0].Query.Set("x", "2")
	if again := f.Requests()[0]; again.Body["url"] != "https://a.example/x" || again.Query.Get("x") != "1" {
		t.Errorf("changing Requests' result changed the log: %+v", again)
	}
	f.ResetRequests()
	if got := len(f.Requests()); got != 0 {
		t.Errorf("after ResetRequests: got %d requests, want 0", got)
	}
}

func TestBehindTheBack(t *testing.T) {
	f := start(t, datagridtest.Options{})
	id, secret := f.Seed("http://not-validated.example", []string{"made.up"}, true)
	if id == "" || secret == "" || f.Secret(id) != secret {
		t.Fatalf("Seed: got (%q, %q), want an id and its secret", id, secret)
	}
	if !f.Disable(id) || !f.SetEvents(id, []string{"batch_prediction.failed"}) {
		t.Fatalf("Disable/SetEvents of a known id: got false, want true")
	}
	w, ok := f.Webhook(id)
	if !ok || w.Enabled || !slices.Equal(w.Events, []string{"batch_prediction.failed"}) {
		t.Errorf("got %+v, want disabled with the new events", w)
	}
	// The API sees the same change.
	r := f.call(http.MethodGet, "/webhooks/"+id, "")
	if m := r.json(t); m["enabled"] != false {
		t.Errorf("GET after Disable: got %v, want enabled false", m)
	}
	if !f.SetEnabled(id, true) || !f.Remove(id) {
		t.Fatalf("SetEnabled/Remove of a known id: got false, want true")
	}
	if f.Remove(id) || f.Disable(id) || f.SetEvents(id, nil) || f.Secret(id) != "" {
		t.Errorf("calls on a removed id: want false and an empty secret")
	}
	if _, ok := f.Webhook(id); ok {
		t.Errorf("Webhook after Remove: got ok, want not found")
	}
	checkProblem(t, f.call(http.MethodGet, "/webhooks/"+id, ""), 404, id)
}

func TestOptions(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("X", 3600))
	n := 0
	f := start(t, datagridtest.Options{
		Now:       func() time.Time { return now },
		NewID:     func() string { n++; return fmt.Sprintf("wh_%d", n) },
		NewSecret: func() string { return "whsec_fixed" },
	})
	w := f.create("batch_prediction.completed")
	if w["id"] != "wh_1" || w["secret"] != "whsec_fixed" || w["created_at"] != "2026-03-04T04:06:07Z" {
		t.Errorf("got %v, want id wh_1, secret whsec_fixed, created_at 2026-03-04T04:06:07Z (UTC, whole seconds)", w)
	}
}

// TestConcurrentUse runs API calls and fault and drift changes at once;
// under -race it fails on any unguarded state.
func TestConcurrentUse(t *testing.T) {
	f := start(t, datagridtest.Options{PageSize: 3})
	const workers, each = 8, 10
	var created atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				r := f.call(http.MethodPost, "/webhooks", `{"url":"https://a.example/x","events":["batch_prediction.completed"]}`)
				if r.status == http.StatusCreated {
					created.Add(1)
				}
				f.call(http.MethodGet, "/webhooks", "")
				f.call(http.MethodGet, "/webhooks/active?event_type=batch_prediction.completed", "")
			}
		})
	}
	// One goroutine per kind of change, so that no lock one of them takes
	// orders the others' changes and hides a missing lock from -race.
	wg.Go(func() {
		for range each {
			id, _ := f.Seed(hookURL, []string{"batch_prediction.failed"}, true)
			f.Disable(id)
			f.SetEvents(id, []string{"batch_prediction.completed"})
			f.Remove(id)
		}
	})
	wg.Go(func() {
		for range each {
			f.FailNext(1, http.StatusServiceUnavailable, "")
		}
	})
	wg.Go(func() {
		for i := range each {
			f.SetLatency(time.Duration(i%2) * time.Millisecond)
		}
	})
	wg.Go(func() {
		for range each {
			_, _ = f.Webhooks(), f.Requests()
		}
	})
	wg.Wait()
	if got, want := len(f.Webhooks()), int(created.Load()); got != want || want == 0 {
		t.Errorf("got %d webhooks, want %d (one per 201 answered, at least one)", got, want)
	}
	if got := f.Count(http.MethodPost, "/v1/webhooks"); got != workers*each {
		t.Errorf("got %d POSTs logged, want %d", got, workers*each)
	}
}

func TestHandlerCanBeMounted(t *testing.T) {
	srv := datagridtest.NewServer(datagridtest.Options{APIKey: testKey})
	if srv.URL() != "" || srv.Close() != nil {
		t.Errorf("a Server made by NewServer: got URL %q, want \"\" and a no-op Close", srv.URL())
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/webhooks", strings.NewReader(`{"url":"https://a.example/x","events":["batch_prediction.completed"]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated || len(srv.Webhooks()) != 1 {
		t.Errorf("got %d and %d webhooks, want 201 and 1", rec.Code, len(srv.Webhooks()))
	}
}

func TestCloseStopsServing(t *testing.T) {
	srv, err := datagridtest.Start(datagridtest.Options{APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") || !strings.HasSuffix(srv.URL(), "/v1") {
		t.Errorf("got URL %q, want http://127.0.0.1:PORT/v1", srv.URL())
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL() + "/webhooks")
	if err == nil {
		resp.Body.Close()
		t.Errorf("after Close: got status %d, want a connection error", resp.StatusCode)
	}
}

func TestLatencyFor(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.SetLatencyFor(http.MethodGet, "/v1/webhooks", 150*time.Millisecond)
	id, _ := f.create("batch_prediction.completed")["id"].(string) // not slowed: another method
	f.call(http.MethodGet, "/webhooks/"+id, "")                    // not slowed: another path
	// A webhook created while a list call waits shows in its answer.
	listed := make(chan reply, 1)
	go func() { listed <- f.call(http.MethodGet, "/webhooks", "") }()
	relaytest.WaitFor(t, 5*time.Second, "the list call to arrive", func() bool { return len(f.Requests()) == 3 })
	late := f.create("batch_prediction.failed")
	if r := <-listed; !bytes.Contains(r.body, []byte(late["id"].(string))) {
		t.Errorf("list answer %s lacks the webhook created while it waited", r.body)
	}
	f.SetLatencyFor(http.MethodGet, "/v1/webhooks", 0)
	f.call(http.MethodGet, "/webhooks", "")
	reqs := f.Requests()
	for i, want := range []bool{false, false, true, false, false} {
		if got := reqs[i].Answered.Sub(reqs[i].Received) >= 150*time.Millisecond; got != want {
			t.Errorf("%s %s: slowed %v, want %v", reqs[i].Method, reqs[i].Path, got, want)
		}
	}
}

func TestOmitFromCreate(t *testing.T) {
	f := start(t, datagridtest.Options{})
	f.OmitFromCreate("secret")
	created := f.create("batch_prediction.completed")
	id, _ := created["id"].(string)
	if _, ok := created["secret"]; ok || id == "" || created["object"] != "webhook" {
		t.Fatalf("got %v, want the webhook object without secret", created)
	}
	if _, ok := f.Webhook(id); !ok || f.Secret(id) == "" {
		t.Fatal("the webhook was not created with a secret")
	}
	f.OmitFromCreate("id", "secret")
	if created := f.create("batch_prediction.completed"); created["id"] != nil || created["secret"] != nil || created["url"] == nil {
		t.Fatalf("got %v, want the webhook object without id and secret", created)
	}
	if n := len(f.Webhooks()); n != 2 {
		t.Fatalf("got %d webhooks, want 2", n)
	}
	f.OmitFromCreate()
	if created := f.create("batch_prediction.completed"); created["id"] == nil || created["secret"] == nil {
		t.Fatalf("got %v, want a whole answer again", created)
	}
}
