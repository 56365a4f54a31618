// Package signature is Datagrid's delivery signature scheme: signing,
// parsing the Datagrid-Signature header, verifying a body, and the secrets
// accepted at a given moment (Keyring, Static, Rotating).
//
// A header is "t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...]"; the signed
// bytes are the decimal t exactly as sent, a '.', then the raw body.
// Verification happens in two steps so that a request can be refused before
// its body is read: Parse checks the header's shape and t; Signed.Verify
// checks the body.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Header carries a delivery's signature.
const Header = "Datagrid-Signature"

// MaxHeaderBytes bounds every Datagrid-Signature line of one request
// together: the header's size, not its entry count, bounds the work, and
// every v1 entry within it counts.
const MaxHeaderBytes = 8 << 10

// Verification failures. They say what was wrong and never echo a secret or
// a computed signature, so they are safe in answers and logs.
var (
	ErrNoSignature      = errors.New("missing " + Header + " header")
	ErrMalformed        = errors.New("malformed " + Header + " header")
	ErrTooLarge         = errors.New(Header + " header larger than " + strconv.Itoa(MaxHeaderBytes) + " bytes")
	ErrStaleTimestamp   = errors.New("signature timestamp outside the tolerance")
	ErrSignatureInvalid = errors.New("signature does not match")
)

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

// Signed is a Datagrid-Signature header that passed Parse: well formed, with
// a timestamp inside the tolerance. Only Verify can tell whether it signs
// the body.
type Signed struct {
	ts string // the decimal timestamp exactly as sent: part of the signed bytes
	t  int64
	// The v1 entries: the first two (two during a rotation, one otherwise)
	// in place, any others in more.
	first [2][sha256.Size]byte
	n     int
	more  [][sha256.Size]byte
}

func (s *Signed) add(sig [sha256.Size]byte) {
	if s.n < len(s.first) {
		s.first[s.n] = sig
	} else {
		s.more = append(s.more, sig)
	}
	s.n++
}

func (s *Signed) sig(i int) []byte {
	if i < len(s.first) {
		return s.first[i][:]
	}
	return s.more[i-len(s.first)][:]
}

// Time is the signature's timestamp.
func (s Signed) Time() time.Time { return time.Unix(s.t, 0) }

// Parse takes apart every line of the Datagrid-Signature header (values as
// http.Header.Values returns them) and checks t against now within
// tolerance. It tolerates spaces, keys it does not know and any number of
// v1 entries on any number of lines; it requires exactly one t and at least
// one well-formed v1, and refuses headers over MaxHeaderBytes.
func Parse(lines []string, now time.Time, tolerance time.Duration) (Signed, error) {
	var s Signed
	size, blank := 0, true
	for _, l := range lines {
		size += len(l)
		blank = blank && strings.TrimSpace(l) == ""
	}
	switch {
	case blank:
		return s, ErrNoSignature
	case size > MaxHeaderBytes:
		return s, ErrTooLarge
	}
	seenT := false
	for _, line := range lines {
		for rest, more := line, true; more; {
			var part string
			part, rest, more = strings.Cut(rest, ",")
			key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue // not key=value: tolerated like an unknown key
			}
			switch strings.TrimSpace(key) {
			case "t":
				value = strings.TrimSpace(value)
				t, err := strconv.ParseInt(value, 10, 64)
				if seenT || err != nil || t <= 0 || value[0] == '+' {
					return Signed{}, ErrMalformed
				}
				seenT, s.ts, s.t = true, value, t
			case "v1":
				var sig [sha256.Size]byte
				value = strings.TrimSpace(value)
				if len(value) != hex.EncodedLen(sha256.Size) {
					continue // not a SHA-256 signature: it can match nothing
				}
				if _, err := hex.Decode(sig[:], []byte(value)); err == nil {
					s.add(sig)
				}
			}
		}
	}
	if !seenT || s.n == 0 {
		return Signed{}, ErrMalformed
	}
	skew := now.Unix() - s.t // no overflow: both are positive
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(tolerance/time.Second) {
		return Signed{}, ErrStaleTimestamp
	}
	return s, nil
}

// Verify checks the signature against body for each accepted secret and
// returns the one that matched, or ErrSignatureInvalid. Each secret's HMAC
// is computed once and compared, in constant time, with every v1 entry.
func (s Signed) Verify(body []byte, secrets []Secret) (Secret, error) {
	matched := -1
	for k, secret := range secrets {
		// No early return: the time taken does not reveal which secret
		// or entry matched.
		if secret.signs(s, body) && matched < 0 {
			matched = k
		}
	}
	if matched < 0 {
		return Secret{}, ErrSignatureInvalid
	}
	return secrets[matched], nil
}
