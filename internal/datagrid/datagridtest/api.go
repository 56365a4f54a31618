package datagridtest

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/event"
)

// The API as datagrid-api.md describes it, from the server's side. These are
// kept apart from the client's constants on purpose: a client that got a
// path or a header wrong must fail against this server, not agree with it.
const (
	apiPrefix      = "/v1"
	collectionPath = apiPrefix + "/webhooks"
	activeSegment  = "active"

	// defaultPageSize is the page size when a list call gives no limit;
	// maxLimit the largest limit accepted.
	defaultPageSize = 50
	maxLimit        = 100

	mediaTypeJSON    = "application/json"
	mediaTypeProblem = "application/problem+json"
	// problemType is RFC 9457's type for problems that need no more
	// explanation than their status, which is why titles are status texts.
	problemType = "about:blank"

	// statusInvalid answers a well-formed body whose values are wrong;
	// malformed bodies and bad query parameters get 400.
	statusInvalid = http.StatusUnprocessableEntity

	// maxBodyBytes bounds a request body; a create is well under 1 KiB.
	maxBodyBytes = 1 << 20

	cursorPrefix = "after:"
)

// answer is what the server replies, decided before anything is written so
// that the request log holds exactly what was sent.
type answer struct {
	status      int
	header      http.Header
	body        any    // encoded as JSON when not nil
	raw         []byte // written as is when not nil
	contentType string
	drop        bool
}

// problemDetails is the body of every error answer.
type problemDetails struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// listPage is the answer of a list call.
type listPage struct {
	Data       []datagrid.Webhook `json:"data"`
	NextCursor *string            `json:"next_cursor"`
}

// activeList is the answer of the active-webhooks call.
type activeList struct {
	Object string             `json:"object"`
	Data   []datagrid.Webhook `json:"data"`
}

// serveHTTP logs the request, waits out any latency, decides the answer and
// writes it.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	authz := r.Header.Get("Authorization")
	rec := &Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		Query:    r.URL.Query(),
		Header:   r.Header.Clone(),
		HasAuth:  authz != "",
		AuthOK:   s.authorized(authz),
		Received: time.Now(),
	}
	rec.Header.Del("Authorization")
	raw, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var obj map[string]any
	if json.Unmarshal(raw, &obj) == nil {
		rec.Body = obj
	}
	// Logged on arrival, so the log also shows requests still in flight
	// (Status 0) and those whose client gave up.
	s.mu.Lock()
	s.log = append(s.log, rec)
	latency := s.latency + s.latencyFor[r.Method+" "+r.URL.Path]
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}

	a := s.answer(r, *rec, raw, readErr)
	s.mu.Lock()
	rec.Status = a.status
	rec.RetryAfter = a.header.Get("Retry-After")
	rec.Answered = time.Now()
	s.mu.Unlock()
	if a.drop {
		// net/http closes the connection without an answer and without
		// logging, on HTTP/1 and HTTP/2 alike.
		panic(http.ErrAbortHandler)
	}

	for k, vs := range a.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	body := a.raw
	if body == nil && a.body != nil {
		body, _ = json.Marshal(a.body) // our own types always encode
	}
	if body != nil {
		w.Header().Set("Content-Type", a.contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(body) // a client that went away is not our problem
}

// authorized reports whether an Authorization header carries the key.
func (s *Server) authorized(authz string) bool {
	scheme, token, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || s.opts.APIKey == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(s.opts.APIKey)) == 1
}

// nextFault takes the next queued fault, if any.
func (s *Server) nextFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) == 0 {
		return Fault{}, false
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	return f, true
}

// answer decides the reply: an injected fault first (it plays a gateway in
// front of the API), then authentication, then the endpoint.
func (s *Server) answer(r *http.Request, rec Request, raw []byte, readErr error) answer {
	if f, ok := s.nextFault(); ok {
		return faultAnswer(f)
	}
	if !rec.HasAuth {
		return unauthorized("missing Authorization header with a Bearer API key")
	}
	if !rec.AuthOK {
		return unauthorized("invalid API key")
	}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			return problem(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes))
		}
		return problem(http.StatusBadRequest, "request body could not be read")
	}

	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), collectionPath)
	switch {
	case !ok:
		return problem(http.StatusNotFound, "no such endpoint")
	case rest == "":
		switch r.Method {
		case http.MethodGet:
			return s.handleList(r.URL.Query())
		case http.MethodPost:
			return s.handleCreate(raw)
		}
		return methodNotAllowed("GET, POST")
	case rest == "/"+activeSegment:
		if r.Method == http.MethodGet {
			return s.handleActive(r.URL.Query())
		}
		return methodNotAllowed("GET")
	case len(rest) > 1 && rest[0] == '/' && !strings.Contains(rest[1:], "/"):
		id, err := url.PathUnescape(rest[1:])
		if err != nil {
			return problem(http.StatusNotFound, "no such endpoint")
		}
		switch r.Method {
		case http.MethodGet:
			return s.handleRetrieve(id)
		case http.MethodPatch:
			return s.handleUpdate(id, raw)
		case http.MethodDelete:
			return s.handleDelete(id)
		}
		return methodNotAllowed("GET, PATCH, DELETE")
	}
	return problem(http.StatusNotFound, "no such endpoint")
}

// handleCreate is POST /webhooks.
func (s *Server) handleCreate(raw []byte) answer {
	var in struct {
		URL    *string   `json:"url"`
		Events *[]string `json:"events"`
	}
	if a, ok := decodeBody(raw, &in); !ok {
		return a
	}
	var problems []string
	if in.URL == nil {
		problems = append(problems, "url is required")
	} else {
		problems = append(problems, checkURL(*in.URL)...)
	}
	if in.Events == nil {
		problems = append(problems, "events is required")
	} else {
		problems = append(problems, checkEvents(*in.Events)...)
	}
	if len(problems) > 0 {
		return problem(statusInvalid, strings.Join(problems, "; "))
	}

	s.mu.Lock()
	h := s.addLocked(*in.URL, *in.Events, true)
	w := h.view()
	w.Secret = h.secret // the one answer that shows it
	omit := s.omit
	s.mu.Unlock()
	if len(omit) == 0 {
		return jsonAnswer(http.StatusCreated, w)
	}
	// An answer that breaks the contract: the object without some fields.
	var obj map[string]any
	b, _ := json.Marshal(w) //nolint:gosec // G117: a create answer carries the secret by design
	_ = json.Unmarshal(b, &obj)
	for _, f := range omit {
		delete(obj, f)
	}
	return jsonAnswer(http.StatusCreated, obj)
}

// handleRetrieve is GET /webhooks/{id}.
func (s *Server) handleRetrieve(id string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byID[id]
	if !ok {
		return notFound(id)
	}
	return jsonAnswer(http.StatusOK, h.view())
}

// handleUpdate is PATCH /webhooks/{id}.
func (s *Server) handleUpdate(id string, raw []byte) answer {
	var in struct {
		URL     *string   `json:"url"`
		Events  *[]string `json:"events"`
		Enabled *bool     `json:"enabled"`
	}
	if a, ok := decodeBody(raw, &in); !ok {
		return a
	}
	var problems []string
	if in.URL != nil {
		problems = append(problems, checkURL(*in.URL)...)
	}
	if in.Events != nil {
		problems = append(problems, checkEvents(*in.Events)...)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byID[id]
	if !ok {
		return notFound(id)
	}
	if len(problems) > 0 {
		return problem(statusInvalid, strings.Join(problems, "; "))
	}
	if in.URL != nil {
		h.wh.URL = *in.URL
	}
	if in.Events != nil {
		h.wh.Events = slices.Clone(*in.Events)
	}
	if in.Enabled != nil {
		h.wh.Enabled = *in.Enabled
	}
	h.wh.UpdatedAt = s.nowLocked()
	return jsonAnswer(http.StatusOK, h.view())
}

// handleDelete is DELETE /webhooks/{id}.
func (s *Server) handleDelete(id string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeLocked(id) {
		return notFound(id)
	}
	return answer{status: http.StatusNoContent}
}

// handleList is GET /webhooks?limit=N&cursor=C.
func (s *Server) handleList(q url.Values) answer {
	limit := s.opts.PageSize
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxLimit {
			return problem(http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d, got %q", maxLimit, q.Get("limit")))
		}
		limit = n
	}
	limit = min(limit, s.opts.MaxPageSize)

	s.mu.Lock()
	defer s.mu.Unlock()
	var after uint64
	if c := q.Get("cursor"); c != "" {
		seq, ok := parseCursor(c)
		if !ok || seq > s.lastSeq {
			return problem(http.StatusBadRequest, "cursor is not one this API handed out")
		}
		after = seq
	}
	// Hooks are in creation order, so the page starts at the first one
	// created after the cursor's, whether or not that one still exists.
	start, _ := slices.BinarySearchFunc(s.hooks, after+1, func(h *hook, seq uint64) int {
		switch {
		case h.seq < seq:
			return -1
		case h.seq > seq:
			return 1
		}
		return 0
	})
	end := min(start+limit, len(s.hooks))
	page := listPage{Data: make([]datagrid.Webhook, 0, end-start)}
	for _, h := range s.hooks[start:end] {
		page.Data = append(page.Data, h.view())
	}
	if end < len(s.hooks) {
		c := makeCursor(s.hooks[end-1].seq)
		page.NextCursor = &c
	}
	return jsonAnswer(http.StatusOK, page)
}

// handleActive is GET /webhooks/active?event_type=E.
func (s *Server) handleActive(q url.Values) answer {
	et := q.Get("event_type")
	if et == "" {
		return problem(http.StatusBadRequest, "event_type is required")
	}
	if !slices.Contains(event.Known(), et) {
		return problem(statusInvalid, fmt.Sprintf("unknown event type %q", et))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := activeList{Object: "list", Data: []datagrid.Webhook{}}
	for _, h := range s.hooks {
		if h.wh.Enabled && slices.Contains(h.wh.Events, et) {
			out.Data = append(out.Data, h.view())
		}
	}
	return jsonAnswer(http.StatusOK, out)
}

// decodeBody reads a JSON object body into v. Unknown fields are fine, as
// they are at Datagrid.
func decodeBody(raw []byte, v any) (answer, bool) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return problem(http.StatusBadRequest, "request body is empty; send a JSON object"), false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return problem(http.StatusBadRequest, "request body is not a valid JSON object: "+err.Error()), false
	}
	return answer{}, true
}

// checkURL returns what is wrong with a webhook URL.
func checkURL(raw string) []string {
	if raw == "" {
		return []string{"url is required"}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return []string{fmt.Sprintf("url must be an absolute HTTPS URL, got %q", raw)}
	}
	return nil
}

// checkEvents returns what is wrong with a list of event types.
func checkEvents(events []string) []string {
	if len(events) == 0 {
		return []string{"events must contain at least one event type"}
	}
	var problems []string
	for i, e := range events {
		if !slices.Contains(event.Known(), e) {
			problems = append(problems, fmt.Sprintf("events[%d]: unknown event type %q; known types are %s", i, e, strings.Join(event.Known(), ", ")))
		}
	}
	return problems
}

func makeCursor(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatUint(seq, 10)))
}

func parseCursor(c string) (uint64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	digits, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

func jsonAnswer(status int, body any) answer {
	return answer{status: status, body: body, contentType: mediaTypeJSON}
}

func problem(status int, detail string) answer {
	return answer{
		status:      status,
		body:        problemDetails{Type: problemType, Title: http.StatusText(status), Status: status, Detail: detail},
		contentType: mediaTypeProblem,
	}
}

func notFound(id string) answer {
	return problem(http.StatusNotFound, fmt.Sprintf("no webhook with id %q", id))
}

func unauthorized(detail string) answer {
	a := problem(http.StatusUnauthorized, detail)
	a.header = http.Header{"Www-Authenticate": {"Bearer"}}
	return a
}

func methodNotAllowed(allow string) answer {
	a := problem(http.StatusMethodNotAllowed, "allowed methods: "+allow)
	a.header = http.Header{"Allow": {allow}}
	return a
}

// faultAnswer turns an injected fault into an answer.
func faultAnswer(f Fault) answer {
	if f.Drop {
		return answer{drop: true}
	}
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	var a answer
	switch {
	case f.Body != "":
		ct := f.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		a = answer{status: f.Status, raw: []byte(f.Body), contentType: ct}
	case f.Detail != "":
		a = problem(f.Status, f.Detail)
	case f.Status == http.StatusTooManyRequests:
		a = problem(f.Status, "rate limit exceeded")
	default:
		a = problem(f.Status, "simulated failure")
	}
	// Canonical keys, so that tests may spell headers as the SDKs do
	// (retry-after-ms) and the log still finds Retry-After.
	a.header = http.Header{}
	for k, vs := range f.Header {
		for _, v := range vs {
			a.header.Add(k, v)
		}
	}
	return a
}
