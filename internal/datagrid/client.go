package datagrid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config configures a Client. BaseURL and APIKey are required; every other
// field has a default.
type Config struct {
	// BaseURL is the API base including the version, e.g. DefaultBaseURL.
	// It must be an absolute http or https URL without user info: the only
	// credential is APIKey, which never goes into a URL.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>" and never appears in
	// an error.
	APIKey string
	// UserAgent is the User-Agent header; DefaultUserAgent when empty.
	UserAgent string
	// HTTPClient sends the requests; when nil, a client whose Timeout bounds
	// each attempt to the SDKs' 60s.
	HTTPClient *http.Client
	// MaxRetries is how often a retryable failure is retried after the first
	// attempt; 0 means DefaultMaxRetries. Set NoRetries for none.
	MaxRetries int
	// NoRetries makes every call a single attempt, whatever MaxRetries says.
	NoRetries bool
	// Observe, when set, is called once per HTTP attempt with the operation
	// (one of the Op constants), the status (0 when no answer came), the
	// attempt's duration and its error (nil on success), so the caller can
	// record metrics. It must be safe for concurrent use.
	Observe func(op string, status int, d time.Duration, err error)
	// Sleep waits d before a retry, returning early with ctx's error when
	// ctx ends. Tests replace it to record delays instead of waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) that sets the jitter of a backoff;
	// math/rand/v2's Float64 when nil.
	Rand func() float64
	// Now reads the clock to turn a Retry-After HTTP date into a delay;
	// time.Now when nil.
	Now func() time.Time
}

// Client calls Datagrid's webhooks API. It is safe for concurrent use.
type Client struct {
	base       string
	key        string
	userAgent  string
	http       *http.Client
	maxRetries int
	observe    func(op string, status int, d time.Duration, err error)
	sleep      func(ctx context.Context, d time.Duration) error
	rand       func() float64
	now        func() time.Time
}

// New checks cfg and returns a Client. It reports every problem at once.
func New(cfg Config) (*Client, error) {
	var problems []error
	base, err := ParseBaseURL(cfg.BaseURL)
	if err != nil {
		problems = append(problems, err)
	}
	if err := CheckAPIKey(cfg.APIKey); err != nil {
		problems = append(problems, err)
	}
	if cfg.MaxRetries < 0 {
		problems = append(problems, fmt.Errorf("max retries %d is negative (set NoRetries for none)", cfg.MaxRetries))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("datagrid client: %w", errors.Join(problems...))
	}

	c := &Client{
		base:       base,
		key:        cfg.APIKey,
		userAgent:  cfg.UserAgent,
		http:       cfg.HTTPClient,
		maxRetries: cfg.MaxRetries,
		observe:    cfg.Observe,
		sleep:      cfg.Sleep,
		rand:       cfg.Rand,
		now:        cfg.Now,
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: defaultTimeout}
	}
	switch {
	case cfg.NoRetries:
		c.maxRetries = 0
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	}
	if c.observe == nil {
		c.observe = func(string, int, time.Duration, error) {}
	}
	if c.sleep == nil {
		c.sleep = sleep
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// ParseBaseURL checks a base URL and returns it without a trailing slash, so
// that appending an API path gives exactly one. Configuration applies the
// same rule, so a bad DATAGRID_BASE_URL is a configuration error.
func ParseBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("base url is empty (Datagrid's is %s)", DefaultBaseURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes its input, which could hold user info.
		return "", errors.New("base url is not a valid URL")
	}
	if u.User != nil {
		return "", errors.New("base url must not contain user info: pass the key as the API key")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("base url %q must be an absolute http or https URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("base url %q must not have a query or fragment", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// CheckAPIKey refuses a key that cannot be sent as a Bearer token. The error
// never quotes the key.
func CheckAPIKey(key string) error {
	switch {
	case key == "":
		return errors.New("api key is empty")
	case !validHeaderValue(key):
		return errors.New("api key contains characters not allowed in an HTTP header (a line break or space?)")
	}
	return nil
}

// validHeaderValue reports whether s can be sent in a header as is.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == ' ' {
			return false
		}
	}
	return true
}

// Create registers a webhook that delivers events to webhookURL. The answer
// is the only place Datagrid ever shows the webhook's Secret.
//
// A create that is retried after its answer was lost may leave a second
// webhook behind; callers reconcile by URL.
func (c *Client) Create(ctx context.Context, webhookURL string, events []string) (Webhook, error) {
	var w Webhook
	if err := c.do(ctx, OpCreate, http.MethodPost, pathWebhooks, nil, createRequest{URL: webhookURL, Events: events}, &w); err != nil {
		return Webhook{}, err
	}
	if w.ID == "" || w.Secret == "" {
		// Without an id the webhook cannot be managed, without a secret its
		// deliveries cannot be verified: not a success, whatever the status.
		return w, &IncompleteError{Op: OpCreate, HasID: w.ID != "", HasSecret: w.Secret != ""}
	}
	return w, nil
}

// Retrieve returns the webhook with the given id.
func (c *Client) Retrieve(ctx context.Context, id string) (Webhook, error) {
	var w Webhook
	path, err := webhookPath(OpRetrieve, id)
	if err != nil {
		return w, err
	}
	err = c.do(ctx, OpRetrieve, http.MethodGet, path, nil, nil, &w)
	return w, err
}

// Update changes the fields set in u and returns the updated webhook.
func (c *Client) Update(ctx context.Context, id string, u Update) (Webhook, error) {
	var w Webhook
	path, err := webhookPath(OpUpdate, id)
	if err != nil {
		return w, err
	}
	err = c.do(ctx, OpUpdate, http.MethodPatch, path, nil, u, &w)
	return w, err
}

// Delete removes the webhook with the given id.
func (c *Client) Delete(ctx context.Context, id string) error {
	path, err := webhookPath(OpDelete, id)
	if err != nil {
		return err
	}
	return c.do(ctx, OpDelete, http.MethodDelete, path, nil, nil, nil)
}

// ListPage returns one page of webhooks, in the API's order (by creation).
// An empty cursor asks for the first page; limit <= 0 leaves the page size to
// the API (DefaultPageSize), otherwise it must be 1..MaxPageSize.
func (c *Client) ListPage(ctx context.Context, cursor string, limit int) (Page, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set(paramLimit, strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set(paramCursor, cursor)
	}
	var p Page
	err := c.do(ctx, OpList, http.MethodGet, pathWebhooks, q, nil, &p)
	return p, err
}

// List returns every webhook of the account, following next_cursor through
// every page. Webhooks created or deleted while it pages may or may not be
// in the result.
func (c *Client) List(ctx context.Context) ([]Webhook, error) {
	all := []Webhook{}
	seen := map[string]bool{}
	cursor := ""
	for {
		p, err := c.ListPage(ctx, cursor, listAllPageSize)
		if err != nil {
			return nil, err
		}
		all = append(all, p.Data...)
		if p.NextCursor == "" {
			return all, nil
		}
		// A server that hands out a cursor twice would keep us here forever.
		if seen[p.NextCursor] {
			return nil, fmt.Errorf("datagrid %s: next_cursor %q repeats", describe(OpList), p.NextCursor)
		}
		seen[p.NextCursor] = true
		cursor = p.NextCursor
	}
}

// webhookPath is the path of one webhook. An empty id would address the
// collection instead, so it is refused before any request.
func webhookPath(op, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("datagrid %s: webhook id is empty", describe(op))
	}
	return pathWebhooks + "/" + url.PathEscape(id), nil
}

// do sends one call, retrying like the SDKs, and decodes a success into out
// (when out is not nil).
func (c *Client) do(ctx context.Context, op, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		// Encoded once: every attempt re-sends these same bytes.
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("datagrid %s: encode request: %w", describe(op), err)
		}
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	for attempt := 0; ; attempt++ {
		retry, delay, err := c.attempt(ctx, op, method, target, body, out, attempt)
		if err == nil {
			return nil
		}
		if !retry || attempt >= c.maxRetries {
			if attempt > 0 {
				return fmt.Errorf("%w (after %d attempts)", err, attempt+1)
			}
			return err
		}
		// sleep also reports a context that ended during the attempt, so
		// the caller learns why the retries stopped.
		if serr := c.sleep(ctx, delay); serr != nil {
			return fmt.Errorf("%w; retry abandoned: %w", err, serr)
		}
	}
}

// attempt sends one HTTP request. It reports whether a failure may be
// retried and after how long; retries counts the retries done before it.
func (c *Client) attempt(ctx context.Context, op, method, target string, body []byte, out any, retries int) (retry bool, delay time.Duration, err error) {
	var rd io.Reader
	if body != nil {
		// A bytes.Reader also lets net/http rewind the body itself.
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return false, 0, c.transportError(op, err)
	}
	req.Header.Set(headerAuthorization, authScheme+c.key)
	req.Header.Set(headerAccept, mediaTypeJSON)
	req.Header.Set(headerUserAgent, c.userAgent)
	if body != nil {
		req.Header.Set(headerContentType, mediaTypeJSON)
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		err = c.transportError(op, err)
		c.observe(op, 0, time.Since(start), err)
		// Connection errors and timeouts are retried; our own context
		// ending is not.
		return ctx.Err() == nil, c.backoff(retries), err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		// The answer broke off: as good as no answer.
		err = c.transportError(op, fmt.Errorf("read answer: %w", err))
		c.observe(op, resp.StatusCode, time.Since(start), err)
		return ctx.Err() == nil, c.backoff(retries), err
	}

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		switch {
		case len(data) > maxResponseBytes:
			err = fmt.Errorf("datagrid %s: answer exceeds %d bytes", describe(op), maxResponseBytes)
		case out != nil:
			if derr := json.Unmarshal(data, out); derr != nil {
				err = fmt.Errorf("datagrid %s: decode answer: %w", describe(op), derr)
			}
		}
		c.observe(op, resp.StatusCode, time.Since(start), err)
		return false, 0, err
	}

	apiErr := newAPIError(op, resp.StatusCode, data, c.redact)
	if d, ok := c.serverDelay(resp.Header); ok && d > 0 {
		apiErr.RetryAfter = min(d, maxServerRetryDelay)
	}
	c.observe(op, resp.StatusCode, time.Since(start), apiErr)
	return shouldRetry(resp), c.retryDelay(resp.Header, retries), apiErr
}

// shouldRetry applies the SDKs' rule: the server's x-should-retry wins,
// otherwise the status decides.
func shouldRetry(resp *http.Response) bool {
	switch resp.Header.Get(headerShouldRetry) {
	case "true":
		return true
	case "false":
		return false
	}
	return retryableStatus(resp.StatusCode)
}

// retryDelay is the wait before the next attempt: the server's delay when it
// gave a usable one, otherwise the backoff.
func (c *Client) retryDelay(h http.Header, retries int) time.Duration {
	if d, ok := c.serverDelay(h); ok && d >= 0 && d <= maxServerRetryDelay {
		return d
	}
	return c.backoff(retries)
}

// serverDelay reads retry-after-ms, then Retry-After as seconds or as an
// HTTP date.
func (c *Client) serverDelay(h http.Header) (time.Duration, bool) {
	if v := h.Get(headerRetryAfterMs); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(ms) && !math.IsInf(ms, 0) {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	v := h.Get(headerRetryAfter)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(s) && !math.IsInf(s, 0) {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(c.now()), true
	}
	return 0, false
}

// backoff is the SDKs' delay before retry number retries+1.
func (c *Client) backoff(retries int) time.Duration {
	d := maxRetryDelay
	// Beyond 2^5 the cap has long been reached; stopping there also keeps
	// the shift from overflowing.
	if retries < 5 {
		d = min(initialRetryDelay<<retries, maxRetryDelay)
	}
	return time.Duration(float64(d) * (1 - c.rand()*maxJitter))
}

// transportError wraps a failure to get an answer, with the key redacted
// from its text.
func (c *Client) transportError(op string, err error) error {
	return &transportError{op: op, msg: c.redact(err.Error()), err: err}
}

// redact removes the API key from text that came from elsewhere.
func (c *Client) redact(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, c.key, "[REDACTED]")
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
