// Package bench is the relay's end-to-end benchmark: a load generator that
// sends signed deliveries like Datagrid, a hand-written baseline relay and a
// bare net/http server to compare the relay with, /proc sampling of CPU and
// peak memory, a checker that every acknowledged event is stored exactly
// once, and the markdown report. cmd/relaybench drives it.
//
// It depends on none of the relay's packages on purpose: it measures the
// relay from outside, as a user would, and keeps working while the relay's
// internals change.
package bench

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// SignatureHeader is the header Datagrid signs deliveries with.
const SignatureHeader = "Datagrid-Signature"

// Sign returns the Datagrid-Signature value for body signed at t with
// secret: "t=<t>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
func Sign(secret []byte, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}
