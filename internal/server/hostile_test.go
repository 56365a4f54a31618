package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/signature"
)

// rawRequest is one HTTP/1.1 request written byte for byte on its own
// connection, so that it can lie: any method, target, header lines and
// Content-Length, chunked or not.
type rawRequest struct {
	method, target string
	header         []string // "Name: value" lines, in order
	body           []byte   // the body as the relay should read it
	contentLength  string   // "" → len(body); "none" → no Content-Length line
	chunked        bool     // send body with Transfer-Encoding: chunked
	closeWrite     bool     // half-close after the body: the relay reads EOF
	// expectContinue sends the headers only and reads the first answer; a
	// 100 Continue is followed by the body and the final answer.
	expectContinue bool
	// headOnly sends no body: for requests net/http refuses on their
	// headers, whose unread body would make it reset the connection
	// before the answer is read.
	headOnly bool
	// answerBy, when set, is when the second a timestamp-edge row was
	// built in ends: an answer after it says nothing about the edge.
	answerBy time.Time
}

// The quarantine reasons, as the contract's Datagrid-Quarantine-Reason.
const (
	qNotJSON     = "body is not a JSON object"
	qNoID        = "envelope has no id"
	qBadID       = "envelope id must be a string of 1-256 visible ASCII characters"
	qNoType      = "envelope has no event_type"
	qBadType     = "envelope event_type is not a safe subject token"
	qDuplicate   = "envelope has more than one copy of id, event_type or timestamp"
	qCaseVariant = "envelope has a case variant of id, event_type or timestamp"
	qFieldTypes  = "envelope id and event_type must be strings"
)

// The answers.
const (
	aStored      = `{"status":"stored"}`
	aDuplicate   = `{"status":"duplicate"}`
	aQuarantined = `{"status":"quarantined"}`
	aMissing     = `{"error":"missing Datagrid-Signature header"}`
	aMalformed   = `{"error":"malformed Datagrid-Signature header"}`
	aHeaderLarge = `{"error":"Datagrid-Signature header larger than 8192 bytes"}`
	aStale       = `{"error":"signature timestamp outside the tolerance"}`
	aMismatch    = `{"error":"signature does not match"}`
	aMethod      = `{"error":"method not allowed, use POST"}`
	aNotFound    = `{"error":"not found"}`
	aUnreadable  = `{"error":"could not read body"}`
	goBadRequest = "400 Bad Request" // net/http's own answer, before the relay sees anything
	goTooLarge   = "431 Request Header Fields Too Large"
)

// hostileCase is one row of the catalogue: a request and everything the
// relay must do with it.
type hostileCase struct {
	name string
	req  func(c *hostileCtx) rawRequest
	// status and answer: the exact status and answer body (trimmed); an
	// answer that is not JSON is net/http's own plain-text answer, which
	// must start with it.
	status int
	answer string
	// What is stored: nothing when subject is empty. msgID "sha256" is the
	// hash of the request body; "" with a subject means the row's id.
	subject, msgID, reason string
	// outcome is the datagrid_relay_deliveries_total outcome that moves by
	// one ("unknown_path" for the unknown-path counter), "" when no counter
	// may move (net/http refused the request itself).
	outcome string
	allow   bool // the answer must carry Allow: POST
}

// hostileCtx is what a row builds its request from.
type hostileCtx struct {
	id    string // unique per row
	path  string // the delivery path
	limit int    // body limit in force
}

func (c *hostileCtx) env(eventType string) []byte { return relaytest.Envelope(c.id, eventType) }

// signNow signs body now with the relay's secret.
func signNow(body []byte) string { return signature.Sign([]byte(secret), time.Now().Unix(), body) }

// hexSig is the hex signature of body at t.
func hexSig(t int64, body []byte) string {
	return strings.TrimPrefix(signature.Sign([]byte(secret), t, body), "t="+strconv.FormatInt(t, 10)+",v1=")
}

// post is a POST of body to the delivery path with the given header lines.
func (c *hostileCtx) post(body []byte, header ...string) rawRequest {
	return rawRequest{method: "POST", target: c.path, body: body, header: header}
}

// signed is a POST of body signed now.
func (c *hostileCtx) signed(body []byte, header ...string) rawRequest {
	return c.post(body, append([]string{signature.Header + ": " + signNow(body)}, header...)...)
}

// edge is a POST of a valid delivery signed at now+offset seconds, built
// at the start of a wall-clock second: the edge rows are exact to the
// second, so the answer must come within it (see answerBy).
func (c *hostileCtx) edge(offset int64) rawRequest {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second).Sub(now))
	now = time.Now()
	b := c.env("batch_prediction.completed")
	r := c.post(b, "Datagrid-Signature: "+signature.Sign([]byte(secret), now.Unix()+offset, b))
	r.answerBy = now.Truncate(time.Second).Add(time.Second)
	return r
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func utf16le(s string) []byte {
	b := []byte{0xff, 0xfe}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// members builds an envelope from raw JSON members put after the id.
func (c *hostileCtx) members(members string) []byte {
	return fmt.Appendf(nil, `{"id":%q,%s,"timestamp":%d,"data":{}}`, c.id, members, time.Now().Unix())
}

func hostileCases() []hostileCase {
	const tol = 300 // RELAY_SIGNATURE_TOLERANCE=5m
	const et = "batch_prediction.completed"
	ev := "datagrid." + et
	q := "datagrid._quarantine"
	zeros := strings.Repeat("0", 64)
	return []hostileCase{
		// The signature header's shape: refused before the body is read.
		{name: "no signature header", req: func(c *hostileCtx) rawRequest { return c.post(c.env(et)) },
			status: 401, answer: aMissing, outcome: "invalid_signature"},
		{name: "empty signature header", req: func(c *hostileCtx) rawRequest { return c.post(c.env(et), "Datagrid-Signature: ") },
			status: 401, answer: aMissing, outcome: "invalid_signature"},
		{name: "two empty signature lines", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), "Datagrid-Signature: ", "Datagrid-Signature: ")
		}, status: 401, answer: aMissing, outcome: "invalid_signature"},
		{name: "t without v1", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), fmt.Sprintf("Datagrid-Signature: t=%d", time.Now().Unix()))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "v1 without t", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, "Datagrid-Signature: v1="+hexSig(time.Now().Unix(), b))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "many v1, the valid one last", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			h := fmt.Sprintf("Datagrid-Signature: t=%d", now) + strings.Repeat(",v1="+zeros, 100) + ",v1=" + hexSig(now, b)
			return c.post(b, h)
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "valid v1 on a second header line", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", now, zeros), "Datagrid-Signature: v1="+hexSig(now, b))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "t on the second line, v1 on the first", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, "Datagrid-Signature: v1="+hexSig(now, b), fmt.Sprintf("Datagrid-Signature: t=%d", now))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "t twice", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=%d,t=%d,v1=%s", now, now, hexSig(now, b)))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "t twice on two lines", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, signature.Header+": "+signature.Sign([]byte(secret), now, b), fmt.Sprintf("Datagrid-Signature: t=%d", now))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "negative t", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=-%d,v1=%s", time.Now().Unix(), zeros))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "zero t", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), "Datagrid-Signature: t=0,v1="+zeros)
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "float t", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), fmt.Sprintf("Datagrid-Signature: t=%d.5,v1=%s", time.Now().Unix(), zeros))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "t beyond int64", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), "Datagrid-Signature: t=99999999999999999999,v1="+zeros)
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "t at the int64 maximum", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), "Datagrid-Signature: t=9223372036854775807,v1="+zeros)
		}, status: 401, answer: aStale, outcome: "stale_timestamp"},
		{name: "t with a plus sign", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=+%d,v1=%s", now, hexSig(now, b)))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "t with a leading zero: the signed bytes are t as sent", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=0%d,v1=%s", now, hexSig(now, b)))
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "unknown keys and a bare word", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: scheme=hmac,t=%d,v0=abc,garbage,v2=%s,v1=%s", now, zeros, hexSig(now, b)))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "spaces around keys and values", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature:   t = %d ,  v1 = %s  ", now, hexSig(now, b)))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "lowercase header name", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, "datagrid-signature: "+signNow(b))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "uppercase keys", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: T=%d,V1=%s", now, hexSig(now, b)))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "semicolons instead of commas", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=%d;v1=%s", now, hexSig(now, b)))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "non-hex v1", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", time.Now().Unix(), strings.Repeat("zz", 32)))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "v1 one hex digit short", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", now, hexSig(now, b)[1:]))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "empty v1", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), fmt.Sprintf("Datagrid-Signature: t=%d,v1=", time.Now().Unix()))
		}, status: 401, answer: aMalformed, outcome: "invalid_signature"},
		{name: "uppercase hex of the right HMAC: the same bytes", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			now := time.Now().Unix()
			return c.post(b, fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", now, strings.ToUpper(hexSig(now, b))))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "well-formed v1 that does not match", req: func(c *hostileCtx) rawRequest {
			return c.post(c.env(et), fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", time.Now().Unix(), zeros))
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "signed with an unknown secret", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, "Datagrid-Signature: "+signature.Sign([]byte("whsec_attacker"), time.Now().Unix(), b))
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "signature of a different body", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(append(b, '\n'), "Datagrid-Signature: "+signNow(b))
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "signature header over 8 KiB", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, "Datagrid-Signature: "+signNow(b)+",x="+strings.Repeat("a", 8<<10))
		}, status: 401, answer: aHeaderLarge, outcome: "invalid_signature"},
		{name: "signature lines together over 8 KiB", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			pad := "x=" + strings.Repeat("a", 4200)
			return c.post(b, "Datagrid-Signature: "+signNow(b), "Datagrid-Signature: "+pad, "Datagrid-Signature: "+pad)
		}, status: 401, answer: aHeaderLarge, outcome: "invalid_signature"},
		{name: "headers over net/http's 64 KiB", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			r := c.post(b, "Datagrid-Signature: "+signNow(b), "X-Pad: "+strings.Repeat("a", 80<<10))
			r.headOnly = true
			return r
		}, status: 431, answer: goTooLarge},

		// Timestamp edges: tolerance 5m, exact to the second.
		{name: "t exactly tolerance in the past", req: func(c *hostileCtx) rawRequest {
			return c.edge(-tol)
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "t exactly tolerance in the future", req: func(c *hostileCtx) rawRequest {
			return c.edge(tol)
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "t one second past the tolerance", req: func(c *hostileCtx) rawRequest {
			return c.edge(-tol - 1)
		}, status: 401, answer: aStale, outcome: "stale_timestamp"},
		{name: "t one second beyond the tolerance in the future", req: func(c *hostileCtx) rawRequest {
			return c.edge(tol + 1)
		}, status: 401, answer: aStale, outcome: "stale_timestamp"},
		{name: "t in 1970", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(b, "Datagrid-Signature: "+signature.Sign([]byte(secret), 1, b))
		}, status: 401, answer: aStale, outcome: "stale_timestamp"},

		// Encodings: signed, so stored, byte for byte, in quarantine.
		{name: "UTF-8 byte order mark", req: func(c *hostileCtx) rawRequest {
			return c.signed(append([]byte("\ufeff"), c.env(et)...))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "UTF-16 body", req: func(c *hostileCtx) rawRequest {
			return c.signed(utf16le(string(c.env(et))), "Content-Type: application/json; charset=utf-16")
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "gzip body signed as sent", req: func(c *hostileCtx) rawRequest {
			return c.signed(gzipped(c.env(et)), "Content-Encoding: gzip")
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "gzip body signed before compression", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			return c.post(gzipped(b), "Content-Encoding: gzip", "Datagrid-Signature: "+signNow(b))
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "raw NUL inside a string", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(fmt.Sprintf(`{"id":"%s","event_type":"a\x00b","timestamp":1}`, c.id)))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "escaped NUL in the id", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":"evt\u0000x","event_type":"batch_prediction.completed","timestamp":1}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qBadID, outcome: "quarantined"},
		{name: "empty body", req: func(c *hostileCtx) rawRequest { return c.signed(nil) },
			status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "no Content-Length, no body: the empty body again, stored once", req: func(c *hostileCtx) rawRequest {
			r := c.signed(nil)
			r.contentLength = "none"
			return r
		}, status: 200, answer: aQuarantined, outcome: "quarantined"},
		{name: "JSON array", req: func(c *hostileCtx) rawRequest { return c.signed([]byte(`[{"id":"x","event_type":"a"}]`)) },
			status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "JSON null", req: func(c *hostileCtx) rawRequest { return c.signed([]byte(`null`)) },
			status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "trailing garbage after the object", req: func(c *hostileCtx) rawRequest { return c.signed(append(c.env(et), "}"...)) },
			status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "nesting deeper than any JSON reader takes", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":"` + c.id + `","event_type":"a","data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNotJSON, outcome: "quarantined"},
		{name: "no id", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"event_type":"batch_prediction.completed","timestamp":1}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qNoID, outcome: "quarantined"},
		{name: "no event_type", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"type":"batch_prediction.completed"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qNoType, outcome: "quarantined"},
		{name: "null event_type", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":null`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qNoType, outcome: "quarantined"},
		{name: "numeric id", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":12345,"event_type":"batch_prediction.completed","timestamp":1}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qFieldTypes, outcome: "quarantined"},
		{name: "numeric event_type", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":42`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qFieldTypes, outcome: "quarantined"},
		{name: "id of 257 characters", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":"` + strings.Repeat("e", 257) + `","event_type":"batch_prediction.completed"}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qBadID, outcome: "quarantined"},
		{name: "id with a header line break", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":"evt_x\r\nNats-Msg-Id: evt_other","event_type":"batch_prediction.completed"}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qBadID, outcome: "quarantined"},
		{name: "id with a Cyrillic lookalike", req: func(c *hostileCtx) rawRequest {
			return c.signed([]byte(`{"id":"evt_оne","event_type":"batch_prediction.completed"}`))
		}, status: 200, answer: aQuarantined, subject: q, msgID: "sha256", reason: qBadID, outcome: "quarantined"},

		// Duplicate and case-variant keys: a strict and a lenient reader
		// would disagree, so the relay routes neither way.
		{name: "event_type twice", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.completed","event_type":"batch_prediction.failed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qDuplicate, outcome: "quarantined"},
		{name: "EVENT_TYPE beside event_type", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.completed","EVENT_TYPE":"batch_prediction.failed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qCaseVariant, outcome: "quarantined"},
		{name: "EVENT_TYPE alone", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"EVENT_TYPE":"batch_prediction.failed"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qCaseVariant, outcome: "quarantined"},
		{name: `escaped \u0065vent_type beside event_type`, req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.completed","\u0065vent_type":"batch_prediction.failed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qDuplicate, outcome: "quarantined"},
		{name: `escaped \u0065vent_type alone is event_type`, req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"\u0065vent_type":"batch_prediction.completed"`))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "timeſtamp (long s) beside timestamp", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.completed","timeſtamp":1`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qCaseVariant, outcome: "quarantined"},
		{name: "ID beside id", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.completed","ID":"evt_other"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qCaseVariant, outcome: "quarantined"},
		{name: "id twice", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"id":"evt_other","event_type":"batch_prediction.completed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qDuplicate, outcome: "quarantined"},
		{name: "event_type case variant nested in data is fine", req: func(c *hostileCtx) rawRequest {
			return c.signed(fmt.Appendf(nil, `{"id":%q,"event_type":"batch_prediction.completed","data":{"EVENT_TYPE":"x","id":"y"}}`, c.id))
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},

		// Subject injection: event types that are not one safe token path.
		{name: "event_type a.>", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a.>"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type a.*", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a.*"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type >", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":">"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type with a space", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a b"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type with CRLF", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a\r\nPUB x 1"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type _quarantine", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"_quarantine"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type empty", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":""`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type with an empty token", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a..b"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type ending in a dot", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"batch_prediction."`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type in capitals", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"Batch_Prediction.Completed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type of 129 characters", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"` + strings.Repeat("a", 129) + `"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type with a Cyrillic o", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"batch_prediction.cоmpleted"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type in fullwidth letters", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"ｂatch_prediction.completed"`))
		}, status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "event_type with an escaped NUL", req: func(c *hostileCtx) rawRequest { return c.signed(c.members(`"event_type":"a\u0000b"`)) },
			status: 200, answer: aQuarantined, subject: q, reason: qBadType, outcome: "quarantined"},
		{name: "unknown but safe event_type is routed", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"future_thing.created"`))
		}, status: 200, answer: aStored, subject: "datagrid.future_thing.created", outcome: "published"},
		{name: "event_type of 128 characters is routed", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.members(`"event_type":"` + strings.Repeat("a", 128) + `"`))
		}, status: 200, answer: aStored, subject: "datagrid." + strings.Repeat("a", 128), outcome: "published"},

		// Paths and methods: the exact path only, 404 without redirects,
		// 405 with Allow: POST.
		{name: "double slash", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = "/" + c.path; return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "trailing slash", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = c.path + "/"; return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "dot-dot segment", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = c.path + "/../x"; return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "dot-dot back to the path", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.target = "/webhooks/x/../datagrid"
			return r
		}, status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "percent-encoded letter", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.target = "/webhooks/%64atagrid"
			return r
		}, status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "encoded slash", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = "/webhooks%2Fdatagrid"; return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "path in capitals", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = strings.ToUpper(c.path); return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "root", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = "/"; return r },
			status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "admin path on the public listener", req: func(c *hostileCtx) rawRequest {
			return rawRequest{method: "GET", target: "/metrics"}
		}, status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "GET on an unknown path is 404 before 405", req: func(c *hostileCtx) rawRequest {
			return rawRequest{method: "GET", target: "//" + c.path}
		}, status: 404, answer: aNotFound, outcome: "unknown_path"},
		{name: "query string on the exact path", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.target = c.path + "?x=1"; return r },
			status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "absolute-form target", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.target = "http://relay.example.com" + c.path
			return r
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "GET", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.method = "GET"; return r },
			status: 405, answer: aMethod, outcome: "method_not_allowed", allow: true},
		{name: "HEAD", req: func(c *hostileCtx) rawRequest { return rawRequest{method: "HEAD", target: c.path} },
			status: 405, outcome: "method_not_allowed", allow: true},
		{name: "OPTIONS", req: func(c *hostileCtx) rawRequest { return rawRequest{method: "OPTIONS", target: c.path} },
			status: 405, answer: aMethod, outcome: "method_not_allowed", allow: true},
		{name: "CONNECT", req: func(c *hostileCtx) rawRequest { return rawRequest{method: "CONNECT", target: c.path} },
			status: 405, answer: aMethod, outcome: "method_not_allowed", allow: true},
		{name: "PUT, signed", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.method = "PUT"; return r },
			status: 405, answer: aMethod, outcome: "method_not_allowed", allow: true},
		{name: "lowercase post", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.method = "post"; return r },
			status: 405, answer: aMethod, outcome: "method_not_allowed", allow: true},

		// Lying framing.
		{name: "Content-Length shorter than the body", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.contentLength = strconv.Itoa(len(r.body) - 10)
			return r
		}, status: 401, answer: aMismatch, outcome: "invalid_signature"},
		{name: "Content-Length longer than the body, then EOF", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.contentLength = strconv.Itoa(len(r.body) + 100)
			r.closeWrite = true
			return r
		}, status: 400, answer: aUnreadable, outcome: "malformed"},
		{name: "Content-Length longer than the body, then silence", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.contentLength = strconv.Itoa(len(r.body) + 100)
			return r
		}, status: 400, answer: aUnreadable, outcome: "malformed"},
		{name: "Content-Length over the limit, body over it too", req: func(c *hostileCtx) rawRequest {
			r := c.post(bytes.Repeat([]byte("x"), c.limit+1),
				fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", time.Now().Unix(), zeros))
			r.contentLength = strconv.Itoa(2 * c.limit)
			return r
		}, status: 413, answer: "", outcome: "too_large"},
		// A declared length over the limit is refused before any of the
		// body is read: a refusal on the client's word, never a reservation.
		{name: "Content-Length of the int64 maximum, few bytes, then EOF", req: func(c *hostileCtx) rawRequest {
			r := c.post([]byte(`{"id":`), fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", time.Now().Unix(), zeros))
			r.contentLength = "9223372036854775807"
			r.closeWrite = true
			return r
		}, status: 413, answer: "", outcome: "too_large"},
		{name: "Content-Length beyond int64", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.contentLength = "18446744073709551616"
			r.headOnly = true
			return r
		}, status: 400, answer: goBadRequest},
		{name: "negative Content-Length", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.contentLength = "-1"
			r.headOnly = true
			return r
		}, status: 400, answer: goBadRequest},
		{name: "Transfer-Encoding gzip, chunked", req: func(c *hostileCtx) rawRequest {
			r := c.signed(nil, "Transfer-Encoding: gzip, chunked")
			r.contentLength = "none"
			return r
		}, status: 501, answer: "Unsupported transfer encoding"}, // net/http's answer
		{name: "NUL in the signature header", req: func(c *hostileCtx) rawRequest {
			b := c.env(et)
			r := c.post(b, "Datagrid-Signature: "+signNow(b)+"\x00")
			r.headOnly = true
			return r
		}, status: 400, answer: goBadRequest},
		{name: "two different Content-Lengths", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et), "Content-Length: 5")
			r.headOnly = true
			return r
		}, status: 400, answer: goBadRequest},
		{name: "Content-Length and chunked together", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et))
			r.chunked = true
			r.header = append(r.header, "Content-Length: 3")
			return r
		}, status: 200, answer: aStored, subject: ev, outcome: "published"}, // chunked wins (RFC 9112 6.3): no smuggling
		{name: "chunked under the limit", req: func(c *hostileCtx) rawRequest { r := c.signed(c.env(et)); r.chunked = true; return r },
			status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "chunked over the limit", req: func(c *hostileCtx) rawRequest {
			r := c.post(bytes.Repeat([]byte("x"), c.limit+1), fmt.Sprintf("Datagrid-Signature: t=%d,v1=%s", time.Now().Unix(), zeros))
			r.chunked = true
			return r
		}, status: 413, outcome: "too_large"},
		{name: "body exactly at the limit", req: func(c *hostileCtx) rawRequest { return c.signed(padded(c.id, c.limit)) },
			status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "body one byte over the limit, signed", req: func(c *hostileCtx) rawRequest { return c.signed(padded(c.id, c.limit+1)) },
			status: 413, outcome: "too_large"},
		{name: "Expect: 100-continue, signed", req: func(c *hostileCtx) rawRequest {
			r := c.signed(c.env(et), "Expect: 100-continue")
			r.expectContinue = true
			return r
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "Expect: 100-continue unsigned: refused before any body is asked for", req: func(c *hostileCtx) rawRequest {
			r := c.post(bytes.Repeat([]byte("x"), 1<<20), "Expect: 100-continue")
			r.expectContinue = true
			return r
		}, status: 401, answer: aMissing, outcome: "invalid_signature"},
		{name: "Expect: 100-continue with a stale t: refused before any body is asked for", req: func(c *hostileCtx) rawRequest {
			r := c.post(bytes.Repeat([]byte("x"), 1<<20), "Expect: 100-continue", "Datagrid-Signature: t=1000,v1="+zeros)
			r.expectContinue = true
			return r
		}, status: 401, answer: aStale, outcome: "stale_timestamp"},
		{name: "text/plain content type is irrelevant", req: func(c *hostileCtx) rawRequest {
			return c.signed(c.env(et), "Content-Type: text/plain")
		}, status: 200, answer: aStored, subject: ev, outcome: "published"},
		{name: "replay of an event already stored", req: func(c *hostileCtx) rawRequest {
			return c.signed(relaytest.Envelope("evt_hostile_replayed", et))
		}, status: 200, answer: aDuplicate, outcome: "duplicate"},
	}
}

// send writes r on a new connection to addr and reads the answer.
func (r rawRequest) send(addr string) (*http.Response, []byte, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))

	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: relay.example.com\r\nConnection: close\r\n", r.method, r.target)
	for _, h := range r.header {
		head.WriteString(h + "\r\n")
	}
	var body []byte
	switch {
	case r.chunked:
		head.WriteString("Transfer-Encoding: chunked\r\n")
		for rest := r.body; len(rest) > 0; {
			n := min(len(rest), 16<<10)
			body = fmt.Appendf(body, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		body = append(body, "0\r\n\r\n"...)
	case r.contentLength == "none":
		body = r.body
	case r.contentLength != "":
		head.WriteString("Content-Length: " + r.contentLength + "\r\n")
		body = r.body
	default:
		head.WriteString("Content-Length: " + strconv.Itoa(len(r.body)) + "\r\n")
		body = r.body
	}
	head.WriteString("\r\n")

	br := bufio.NewReader(conn)
	req := &http.Request{Method: r.method}
	if _, err := conn.Write(head.Bytes()); err != nil {
		return nil, nil, err
	}
	if r.headOnly {
		body = nil
	}
	if r.expectContinue {
		resp, err := http.ReadResponse(br, req)
		if err != nil || resp.StatusCode != http.StatusContinue {
			return readAll(resp, err)
		}
	}
	// Write the body while reading: the relay may answer (413) before it
	// has read all of it.
	go func() {
		_, _ = conn.Write(body)
		if r.closeWrite {
			_ = conn.(*net.TCPConn).CloseWrite()
		}
	}()
	for {
		resp, err := http.ReadResponse(br, req)
		if err == nil && resp.StatusCode == http.StatusContinue {
			continue
		}
		return readAll(resp, err)
	}
}

func readAll(resp *http.Response, err error) (*http.Response, []byte, error) {
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestHostileCatalogue sends each malformed or malicious request of the
// catalogue to a running relay over real HTTP and checks the exact status,
// the answer, what is stored and the outcome counted.
func TestHostileCatalogue(t *testing.T) {
	ns := natstest.Start(t, nil)
	r := start(t, ns.ClientURL(), map[string]string{
		"RELAY_READ_TIMEOUT": "2s",
		// A loaded machine may take more than the test's usual 1s to store
		// a megabyte; a 503 would say nothing about the row.
		"RELAY_PUBLISH_TIMEOUT": "10s",
	}, nil)
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 200)
	if resp, err := relaytest.Post(r.delivery, secret, relaytest.Envelope("evt_hostile_replayed", "batch_prediction.completed")); err != nil || resp.Status != 200 {
		t.Fatalf("first delivery: %d %v", resp.Status, err)
	}
	m, _ := scrape(r.admin)
	limit := int(metricValue(m, "datagrid_relay_delivery_body_limit_bytes"))
	if limit <= 0 {
		t.Fatalf("no body limit in metrics")
	}
	addr := strings.TrimPrefix(strings.TrimSuffix(r.delivery, "/webhooks/datagrid"), "http://")

	js := natstest.JetStream(t, ns.ClientURL())
	ctx := context.Background()
	stream, err := js.Stream(ctx, "DATAGRID")
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}

	cases := hostileCases()
	if len(cases) < 60 {
		t.Fatalf("the catalogue has %d rows, want at least 60", len(cases))
	}
	names := map[string]bool{}
	// What the previous row left: the counters and the stream's last
	// sequence (one scrape per row keeps the catalogue fast).
	counted, seq := outcomes(t, r.admin), lastSeq()
	for i, tc := range cases {
		if names[tc.name] {
			t.Fatalf("row %q twice", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			c := &hostileCtx{id: fmt.Sprintf("evt_hostile_%03d", i), path: "/webhooks/datagrid", limit: limit}
			before, done := counted, false
			defer func() { // a row that stopped short leaves the state unknown
				if !done {
					counted, seq = outcomes(t, r.admin), lastSeq()
				}
			}()
			req := tc.req(c)
			resp, got, err := req.send(addr)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if !req.answerBy.IsZero() && time.Now().After(req.answerBy) {
				t.Skip("answered after the second the timestamp was made in: the machine is too slow to test this edge now")
			}
			answer := strings.TrimSpace(string(got))

			if resp.StatusCode != tc.status {
				t.Errorf("status: got %d %q, want %d", resp.StatusCode, answer, tc.status)
			}
			switch {
			case tc.answer != "" && tc.answer[0] != '{':
				if !strings.HasPrefix(answer, tc.answer) {
					t.Errorf("answer: got %q, want net/http's %q", answer, tc.answer)
				}
			case tc.answer != "":
				if answer != tc.answer {
					t.Errorf("answer: got %q, want %q", answer, tc.answer)
				}
			case tc.status == 413:
				if want := fmt.Sprintf(`{"error":"body larger than %d bytes"}`, limit); answer != want {
					t.Errorf("answer: got %q, want %q", answer, want)
				}
			}
			if resp.StatusCode >= 300 && resp.StatusCode < 400 || resp.Header.Get("Location") != "" {
				t.Errorf("redirected to %q", resp.Header.Get("Location"))
			}
			if strings.HasPrefix(answer, "{") && resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", resp.Header.Get("Content-Type"))
			}
			if tc.allow && resp.Header.Get("Allow") != "POST" {
				t.Errorf("Allow: got %q, want POST", resp.Header.Get("Allow"))
			}
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if strings.Contains(answer, secret) {
				t.Error("the answer echoes the secret")
			}

			// What is stored: one message exactly as the row says, or none.
			after := lastSeq()
			switch {
			case tc.subject == "" && after != seq:
				t.Errorf("stored %d messages, want none", after-seq)
			case tc.subject != "" && after != seq+1:
				t.Errorf("stored %d messages, want one on %s", after-seq, tc.subject)
			case tc.subject != "":
				msg, err := stream.GetMsg(ctx, after)
				if err != nil {
					t.Fatal(err)
				}
				wantID := c.id
				switch tc.msgID {
				case "sha256":
					sum := sha256.Sum256(req.body)
					wantID = "sha256:" + hex.EncodeToString(sum[:])
				case "":
				default:
					wantID = tc.msgID
				}
				if msg.Subject != tc.subject {
					t.Errorf("subject: got %q, want %q", msg.Subject, tc.subject)
				}
				if got := msg.Header.Get(jetstream.MsgIDHeader); got != wantID {
					t.Errorf("Nats-Msg-Id: got %q, want %q", got, wantID)
				}
				if got := msg.Header.Get("Datagrid-Quarantine-Reason"); got != tc.reason {
					t.Errorf("Datagrid-Quarantine-Reason: got %q, want %q", got, tc.reason)
				}
				if !bytes.Equal(msg.Data, req.body) {
					t.Errorf("stored payload differs from the body sent (%d bytes stored, %d sent)", len(msg.Data), len(req.body))
				}
			}

			// Exactly the row's outcome counter moved, by one.
			var now map[string]float64
			relaytest.WaitFor(t, 5*time.Second, "the outcome to be counted", func() bool {
				now = outcomes(t, r.admin)
				return tc.outcome == "" || now[tc.outcome] == before[tc.outcome]+1
			})
			for o, v := range now {
				want := before[o]
				if o == tc.outcome {
					want++
				}
				if v != want {
					t.Errorf("outcome %s: moved from %v to %v, want %v", o, before[o], v, want)
				}
			}
			counted, seq, done = now, after, true
		})
	}
}
