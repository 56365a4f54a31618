// Package datagridtest is a faithful fake of Datagrid's webhooks API: the
// only fake of it the project has. Tests run it on a loopback listener
// (Start); `relay demo` mounts its Handler as the built-in simulator.
//
// It answers as datagrid-api.md describes: Bearer auth, problem-details
// errors, 201 with the secret on create and never again, cursor pages in
// creation order, 204 on delete. On top it can misbehave on demand
// (FailNext, FailNextWith, SetLatency, SetLatencyFor, OmitFromCreate),
// change webhooks behind the
// client's back (Disable, Remove, SetEvents, Seed) and tell what it was
// asked (Requests). Every method is safe for concurrent use, also while
// requests are served.
package datagridtest

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid"
)

// Options configures a Server. Only APIKey matters for most uses.
type Options struct {
	// APIKey is the one key the server accepts as "Authorization: Bearer
	// <key>". With an empty APIKey every call is answered 401, like an
	// account without keys.
	APIKey string
	// PageSize is the page size when a list call gives no limit; 50, the
	// API's default, when 0.
	PageSize int
	// MaxPageSize caps the size of a page below the limit asked for, so
	// tests can make a client that asks for 100 cross pages. It defaults to
	// 100, the largest limit the API accepts; larger limits are refused
	// with 400 whatever MaxPageSize says.
	MaxPageSize int
	// Now stamps created_at and updated_at; time.Now when nil. The request
	// log always uses the real clock, so retry delays can be measured.
	Now func() time.Time
	// NewSecret makes the secret of a new webhook; "whsec_" and 32 random
	// hex digits when nil.
	NewSecret func() string
	// NewID makes the id of a new webhook; "wh_" and 24 random hex digits
	// when nil. It must not repeat an id.
	NewID func() string
}

// Fault is a misbehaviour for the next requests, whatever they ask.
type Fault struct {
	// Status is the status answered, e.g. 429 or 503; 500 when 0.
	Status int
	// Header is added to the answer, e.g. Retry-After, retry-after-ms or
	// x-should-retry.
	Header http.Header
	// Detail is the problem-details detail; a generic one when empty.
	Detail string
	// Body and ContentType, when Body is set, replace the problem-details
	// body, to play a proxy that answers with its own error page.
	Body, ContentType string
	// Drop closes the connection without any answer, like a network
	// failure; Status and the rest are then unused.
	Drop bool
}

// Request is one request as the server saw it. It never holds the API key.
type Request struct {
	// Method, Path (unescaped) and Query of the request.
	Method string
	Path   string
	Query  url.Values
	// Header holds the request headers without Authorization.
	Header http.Header
	// HasAuth reports whether an Authorization header was sent, AuthOK
	// whether it carried the right Bearer key.
	HasAuth, AuthOK bool
	// Body is the request body decoded as a JSON object; nil when the body
	// was empty or not a JSON object.
	Body map[string]any
	// Status is the status answered; 0 while the request is in flight,
	// and for good when the connection was dropped or the client went away
	// first.
	Status int
	// RetryAfter is the Retry-After header answered, if any.
	RetryAfter string
	// Received is when the request arrived; Answered when its answer was
	// about to be written. A client honouring Retry-After sends its next
	// request no earlier than Answered plus that delay.
	Received, Answered time.Time
}

// Events is the body's "events" list, as strings; nil when there is none.
func (r Request) Events() []string {
	list, _ := r.Body["events"].([]any)
	var events []string
	for _, e := range list {
		s, _ := e.(string)
		events = append(events, s)
	}
	return events
}

// Server is the fake API. Make it with NewServer (to mount Handler) or
// Start (to listen on loopback).
type Server struct {
	opts    Options
	handler http.Handler

	mu      sync.Mutex
	hooks   []*hook // in creation order, which is the list order
	byID    map[string]*hook
	lastSeq uint64
	faults  []Fault
	latency time.Duration
	// latencyFor delays the answers of one method and path on top of
	// latency, e.g. only list calls.
	latencyFor map[string]time.Duration
	// omit lists the fields left out of create answers.
	omit []string
	log  []*Request // entries are filled in when answered, under mu

	// Set by Start only.
	httpServer *http.Server
	url        string
	served     chan struct{}
}

// hook is a stored webhook. seq orders hooks by creation and backs cursors,
// which therefore stay valid when the webhook they point at is deleted.
type hook struct {
	seq    uint64
	wh     datagrid.Webhook // Secret always empty
	secret string
}

// NewServer returns a Server with no webhooks that is not listening; serve
// its Handler, or use Start instead.
func NewServer(opts Options) *Server {
	if opts.PageSize <= 0 {
		opts.PageSize = defaultPageSize
	}
	if opts.MaxPageSize <= 0 || opts.MaxPageSize > maxLimit {
		opts.MaxPageSize = maxLimit
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewSecret == nil {
		opts.NewSecret = func() string { return "whsec_" + randomHex(16) }
	}
	if opts.NewID == nil {
		opts.NewID = func() string { return "wh_" + randomHex(12) }
	}
	s := &Server{opts: opts, byID: map[string]*hook{}}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s
}

// Handler serves the API under /v1, e.g. /v1/webhooks.
func (s *Server) Handler() http.Handler { return s.handler }

// FailNext makes the next n requests answer status with a problem-details
// body and, when retryAfter is not empty, a Retry-After header.
func (s *Server) FailNext(n, status int, retryAfter string) {
	f := Fault{Status: status}
	if retryAfter != "" {
		f.Header = http.Header{"Retry-After": {retryAfter}}
	}
	s.FailNextWith(n, f)
}

// FailNextWith makes the next n requests misbehave as f says. Faults queue
// up behind those not yet used.
func (s *Server) FailNextWith(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// ClearFaults drops every fault not yet used.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetLatency delays every answer by d from now on; 0 removes the delay.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetLatencyFor delays the answers to method and path (unescaped, e.g.
// "GET", "/v1/webhooks" for list calls) by d from now on, on top of
// SetLatency's delay; 0 removes it. The answer is decided after the delay,
// so it shows what changed meanwhile, as a slow API would.
func (s *Server) SetLatencyFor(method, path string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latencyFor == nil {
		s.latencyFor = map[string]time.Duration{}
	}
	if d <= 0 {
		delete(s.latencyFor, method+" "+path)
		return
	}
	s.latencyFor[method+" "+path] = d
}

// OmitFromCreate makes create answers leave out the named fields of the
// webhook object from now on, e.g. "secret" or "id", to play an API that
// breaks its own contract; the webhook is still created. No fields: answers
// are whole again.
func (s *Server) OmitFromCreate(fields ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.omit = slices.Clone(fields)
}

// Seed stores a webhook without any request, valid or not, and returns its
// id and secret: a stale registration left by an earlier run, say, or other
// users' webhooks.
func (s *Server) Seed(webhookURL string, events []string, enabled bool) (id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.addLocked(webhookURL, events, enabled)
	return h.wh.ID, h.secret
}

// Webhooks returns a copy of every webhook, in creation order, without
// secrets.
func (s *Server) Webhooks() []datagrid.Webhook {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]datagrid.Webhook, 0, len(s.hooks))
	for _, h := range s.hooks {
		out = append(out, h.view())
	}
	return out
}

// For lists the ids of the webhooks for url, in creation order.
func (s *Server) For(url string) []string {
	var ids []string
	for _, wh := range s.Webhooks() {
		if wh.URL == url {
			ids = append(ids, wh.ID)
		}
	}
	return ids
}

// Webhook returns a copy of the webhook with the given id, without its
// secret, and whether it exists.
func (s *Server) Webhook(id string) (datagrid.Webhook, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byID[id]
	if !ok {
		return datagrid.Webhook{}, false
	}
	return h.view(), true
}

// Secret returns the signing secret of a webhook, "" for an unknown id, so
// tests can sign deliveries as Datagrid would.
func (s *Server) Secret(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.byID[id]; ok {
		return h.secret
	}
	return ""
}

// SetEnabled enables or disables a webhook behind the client's back. It
// reports whether the webhook exists.
func (s *Server) SetEnabled(id string, enabled bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byID[id]
	if ok {
		h.wh.Enabled = enabled
		h.wh.UpdatedAt = s.nowLocked()
	}
	return ok
}

// Disable disables a webhook behind the client's back. It reports whether
// the webhook exists.
func (s *Server) Disable(id string) bool { return s.SetEnabled(id, false) }

// SetEvents replaces a webhook's events behind the client's back, without
// validation. It reports whether the webhook exists.
func (s *Server) SetEvents(id string, events []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byID[id]
	if ok {
		h.wh.Events = slices.Clone(events)
		h.wh.UpdatedAt = s.nowLocked()
	}
	return ok
}

// Remove deletes a webhook behind the client's back. It reports whether the
// webhook existed.
func (s *Server) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(id)
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.log))
	for i, r := range s.log {
		out[i] = r.clone()
	}
	return out
}

// RateLimited returns the logged requests that were answered 429.
func (s *Server) RateLimited() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Status == http.StatusTooManyRequests {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many logged requests had the given method and path,
// e.g. Count("POST", "/v1/webhooks").
func (s *Server) Count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.log {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// ResetRequests empties the request log, e.g. after seeding through the API.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

// addLocked stores a new webhook. s.mu must be held.
func (s *Server) addLocked(webhookURL string, events []string, enabled bool) *hook {
	now := s.nowLocked()
	s.lastSeq++
	h := &hook{
		seq: s.lastSeq,
		wh: datagrid.Webhook{
			Object:    "webhook",
			ID:        s.opts.NewID(),
			URL:       webhookURL,
			Events:    slices.Clone(events),
			Enabled:   enabled,
			CreatedAt: now,
			UpdatedAt: now,
		},
		secret: s.opts.NewSecret(),
	}
	s.hooks = append(s.hooks, h)
	s.byID[h.wh.ID] = h
	return h
}

// removeLocked deletes a webhook. s.mu must be held.
func (s *Server) removeLocked(id string) bool {
	if _, ok := s.byID[id]; !ok {
		return false
	}
	delete(s.byID, id)
	s.hooks = slices.DeleteFunc(s.hooks, func(h *hook) bool { return h.wh.ID == id })
	return true
}

// nowLocked is the time stamped on webhooks: UTC, whole seconds, as the API
// shows them.
func (s *Server) nowLocked() time.Time {
	return s.opts.Now().UTC().Truncate(time.Second)
}

// view is what the API shows of a hook: a copy without the secret.
func (h *hook) view() datagrid.Webhook {
	w := h.wh
	w.Events = slices.Clone(h.wh.Events)
	return w
}

// clone copies r deeply enough that the caller cannot reach the log.
func (r Request) clone() Request {
	r.Query = cloneValues(r.Query)
	r.Header = r.Header.Clone()
	// Only the top level is copied: the server never changes nested values.
	r.Body = maps.Clone(r.Body)
	return r
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes instead)
	return hex.EncodeToString(b)
}
