// Package datagrid is a small typed client for Datagrid's webhooks API.
//
// It behaves like Datagrid's official SDKs (Bearer auth, JSON bodies,
// retries with exponential backoff and jitter that honour Retry-After,
// retry-after-ms and x-should-retry) so the relay is as polite to the API as
// any other Datagrid client. Every fact about the wire (paths, headers, which
// statuses are retried, page sizes, delays) is a constant in this file: where
// the live API and the documentation disagree the live API wins, and the fix
// belongs here, in one place.
package datagrid

import (
	"net/http"
	"time"
)

// Facts about the Datagrid API.
const (
	// DefaultBaseURL is Datagrid's API base, the default of the official
	// SDKs (which let DATAGRID_BASE_URL override it).
	DefaultBaseURL = "https://api.datagrid.com/v1"

	// Paths relative to the base URL; a webhook's own path is
	// pathWebhooks + "/" + its escaped id.
	pathWebhooks = "/webhooks"

	// Query parameters.
	paramLimit  = "limit"
	paramCursor = "cursor"

	// Request headers.
	headerAuthorization = "Authorization"
	authScheme          = "Bearer "
	headerAccept        = "Accept"
	headerContentType   = "Content-Type"
	headerUserAgent     = "User-Agent"
	mediaTypeJSON       = "application/json"

	// Response headers that steer retries. Header.Get canonicalises the
	// SDKs' lower-case spellings.
	headerRetryAfter   = "Retry-After"    // seconds or an HTTP date
	headerRetryAfterMs = "Retry-After-Ms" // milliseconds, may be fractional
	headerShouldRetry  = "X-Should-Retry" // "true" or "false", overrides the status rule

	// MaxPageSize is the largest limit a list call accepts.
	MaxPageSize = 100
	// DefaultPageSize is the page size the API uses when no limit is given.
	DefaultPageSize = 50
	// listAllPageSize is the limit List asks for: the largest, so that
	// following every page costs as few calls as possible.
	listAllPageSize = MaxPageSize

	// DefaultMaxRetries is how often a failed call is retried, as in the SDKs.
	DefaultMaxRetries = 2
	// Backoff without a server-given delay: initialRetryDelay, doubling per
	// retry, capped at maxRetryDelay, then reduced by up to maxJitter so that
	// many replicas do not retry in lockstep.
	initialRetryDelay = 500 * time.Millisecond
	maxRetryDelay     = 8 * time.Second
	maxJitter         = 0.25
	// maxServerRetryDelay is the longest server-given delay honoured as is;
	// a longer one falls back to the backoff above, like the SDKs do.
	maxServerRetryDelay = 60 * time.Second

	// defaultTimeout bounds one attempt when Config.HTTPClient is nil; it is
	// the SDKs' default request timeout.
	defaultTimeout = 60 * time.Second
	// DefaultUserAgent is sent when Config.UserAgent is empty.
	DefaultUserAgent = "datagrid-relay"
	// maxResponseBytes bounds what is read of one answer; a full page of
	// 100 webhooks is far smaller.
	maxResponseBytes = 4 << 20
)

// retryableStatus reports whether the SDKs retry an answer with this status
// when the server sent no x-should-retry header.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return true
	}
	return status >= http.StatusInternalServerError
}

// Operation names passed to Config.Observe and stored in APIError.Op. They
// are a small fixed set so they can be used as metric labels.
const (
	OpCreate   = "create"
	OpRetrieve = "retrieve"
	OpUpdate   = "update"
	OpList     = "list"
	OpDelete   = "delete"
)

// Ops returns every operation name, for pre-initialising metric series.
func Ops() []string {
	return []string{OpCreate, OpRetrieve, OpUpdate, OpList, OpDelete}
}

// describe turns an operation name into the words used in error messages.
func describe(op string) string {
	switch op {
	case OpCreate:
		return "create webhook"
	case OpRetrieve:
		return "retrieve webhook"
	case OpUpdate:
		return "update webhook"
	case OpList:
		return "list webhooks"
	case OpDelete:
		return "delete webhook"
	}
	return op
}

// Webhook is Datagrid's webhook object.
type Webhook struct {
	Object    string    `json:"object"`
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Enabled   bool      `json:"enabled"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Secret is the signing secret. Datagrid returns it from create only,
	// never again, so it is empty everywhere else.
	Secret string `json:"secret,omitempty"`
}

// Update is the body of an update call. Nil and empty fields are left out
// and so stay unchanged at Datagrid; Events, when given, must not be empty.
type Update struct {
	URL     *string  `json:"url,omitempty"`
	Events  []string `json:"events,omitempty"`
	Enabled *bool    `json:"enabled,omitempty"`
}

// Page is one page of a list call. NextCursor is empty on the last page
// (the API sends null).
type Page struct {
	Data       []Webhook `json:"data"`
	NextCursor string    `json:"next_cursor"`
}

// createRequest is the body of a create call.
type createRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
}
