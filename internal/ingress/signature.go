package ingress

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a delivery's signature:
// "t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...]".
const SignatureHeader = "Datagrid-Signature"

// Verification failures. They say what was wrong and never echo a secret or
// a computed signature, so they are safe in answers and logs.
var (
	ErrNoSignature      = errors.New("missing " + SignatureHeader + " header")
	ErrMalformed        = errors.New("malformed " + SignatureHeader + " header")
	ErrStaleTimestamp   = errors.New("signature timestamp outside the tolerance")
	ErrSignatureInvalid = errors.New("signature does not match")
)

// maxSignatures bounds the v1 entries examined, so a crafted header cannot
// make one request cost many HMAC comparisons.
const maxSignatures = 8

// Sign returns the Datagrid-Signature header value for body signed at t with
// secret, exactly as Datagrid computes it.
func Sign(secret []byte, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// parsedHeader is a Datagrid-Signature header taken apart.
type parsedHeader struct {
	ts   string // the decimal timestamp exactly as sent: it is part of the signed bytes
	t    int64
	sigs [][sha256.Size]byte
}

// parseHeader takes a signature header apart. It tolerates spaces around
// entries, keys it does not know and several v1 entries; it requires exactly
// one t and at least one well-formed v1.
func parseHeader(h string) (parsedHeader, error) {
	var p parsedHeader
	if strings.TrimSpace(h) == "" {
		return p, ErrNoSignature
	}
	seenT := false
	for part := range strings.SplitSeq(h, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue // not key=value: tolerated like an unknown key
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "t":
			if seenT {
				return p, ErrMalformed
			}
			seenT = true
			t, err := strconv.ParseInt(value, 10, 64)
			if err != nil || t <= 0 || value[0] == '+' {
				return p, ErrMalformed
			}
			p.ts, p.t = value, t
		case "v1":
			var sig [sha256.Size]byte
			if len(value) != hex.EncodedLen(sha256.Size) {
				continue // not a SHA-256 signature: it can match nothing
			}
			if _, err := hex.Decode(sig[:], []byte(value)); err != nil {
				continue
			}
			if len(p.sigs) < maxSignatures {
				p.sigs = append(p.sigs, sig)
			}
		}
	}
	if !seenT || len(p.sigs) == 0 {
		return p, ErrMalformed
	}
	return p, nil
}

// Verify checks header against body for any of secrets at time now, with
// the given tolerance on |now - t|. It returns nil or one of the Err values
// above. Comparisons are constant-time.
func Verify(header string, body []byte, secrets [][]byte, now time.Time, tolerance time.Duration) error {
	_, err := VerifyWhich(header, body, secrets, now, tolerance)
	return err
}

// VerifyWhich is Verify that also tells which secret matched: its index in
// secrets.
func VerifyWhich(header string, body []byte, secrets [][]byte, now time.Time, tolerance time.Duration) (int, error) {
	p, err := parseHeader(header)
	if err != nil {
		return -1, err
	}
	skew := now.Unix() - p.t
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(tolerance/time.Second) {
		return -1, ErrStaleTimestamp
	}
	matched := -1
	for k, secret := range secrets {
		want := mac(secret, p.ts, body)
		for i := range p.sigs {
			// No early return: the time taken does not reveal which secret
			// or entry matched.
			if hmac.Equal(want, p.sigs[i][:]) && matched < 0 {
				matched = k
			}
		}
	}
	if matched < 0 {
		return -1, ErrSignatureInvalid
	}
	return matched, nil
}
