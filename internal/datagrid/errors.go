package datagrid

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIError is an answer from Datagrid that is not a success, read from its
// problem-details body. When the body is not problem details (a proxy's
// HTML page, say) Title is the status text and Type and Detail are empty.
type APIError struct {
	// Status is the HTTP status of the answer.
	Status int
	// Title, Type and Detail are the problem-details fields of the same names.
	Title, Type, Detail string
	// Op is the operation that failed, one of the Op constants.
	Op string
	// RetryAfter is the server's Retry-After (or retry-after-ms), capped at
	// a minute; 0 when it gave none.
	RetryAfter time.Duration
}

// RetryAfter is the delay the API asked for in err (0 when none): a caller
// that retries later must wait at least this long.
func RetryAfter(err error) time.Duration {
	var e *APIError
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// IncompleteError is a 2xx answer that lacks what makes it usable: a
// create answer without the webhook's id or its secret.
type IncompleteError struct {
	Op               string
	HasID, HasSecret bool
}

func (e *IncompleteError) Error() string {
	var missing []string
	if !e.HasID {
		missing = append(missing, "id")
	}
	if !e.HasSecret {
		missing = append(missing, "secret")
	}
	return "datagrid " + describe(e.Op) + ": the API answered success without " + strings.Join(missing, " and ")
}

// Error reads like "datagrid create webhook: 401 Unauthorized: invalid API key".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("datagrid ")
	b.WriteString(describe(e.Op))
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(e.Status))
	text := http.StatusText(e.Status)
	if text != "" {
		b.WriteString(" ")
		b.WriteString(text)
	}
	// A title that only repeats the status text ("about:blank" problems)
	// would read twice.
	if e.Title != "" && e.Title != text {
		b.WriteString(": ")
		b.WriteString(e.Title)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// IsAuth reports whether err is Datagrid refusing the API key (401 or 403):
// retrying cannot help, the operator has to fix the key.
func IsAuth(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// IsNotFound reports whether err is Datagrid answering 404, e.g. for a
// webhook deleted behind the relay's back.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// problem is a problem-details body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

// newAPIError reads an error answer. The body is parsed whatever its
// Content-Type claims, because some gateways label problem details as
// plain JSON. Text from the server goes through redact: a server that
// quotes the presented key must not put it into our logs.
func newAPIError(op string, status int, body []byte, redact func(string) string) *APIError {
	e := &APIError{Status: status, Op: op}
	var p problem
	if json.Unmarshal(body, &p) == nil {
		e.Title, e.Type, e.Detail = redact(p.Title), redact(p.Type), redact(p.Detail)
	}
	if e.Title == "" {
		e.Title = http.StatusText(status)
	}
	return e
}

// transportError is a call that got no answer: a refused or dropped
// connection, a timeout, a cancelled context. Its text is redacted once, when
// made; Unwrap keeps errors.Is(err, context.Canceled) and net.Error working.
type transportError struct {
	op  string
	msg string
	err error
}

func (e *transportError) Error() string { return "datagrid " + describe(e.op) + ": " + e.msg }

func (e *transportError) Unwrap() error { return e.err }
