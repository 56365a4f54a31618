package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Secret is one signing secret and the Datagrid webhook it belongs to
// (empty when unknown, as for secrets given by hand). Make it with
// NewSecret, which keeps its HMAC state for reuse across deliveries; a
// Secret literal works too, computing the HMAC afresh each time.
type Secret struct {
	Key       []byte
	WebhookID string
	macs      *sync.Pool // of hmac.New(sha256.New, Key)
}

// NewSecret returns the Secret of key for webhookID.
func NewSecret(key []byte, webhookID string) Secret {
	return Secret{Key: key, WebhookID: webhookID, macs: &sync.Pool{New: func() any {
		return &macState{h: hmac.New(sha256.New, key)}
	}}}
}

// macState is an HMAC state of one key with room for its sum, reused
// across deliveries.
type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
	ts  [24]byte // the timestamp's bytes: hash.Hash takes no string without a copy
}

// signs reports whether any v1 entry of s is HMAC-SHA256(Key, ts + "." +
// body), comparing with every entry in constant time.
func (s Secret) signs(signed Signed, body []byte) bool {
	var m *macState
	if s.macs != nil {
		m = s.macs.Get().(*macState)
		defer s.macs.Put(m)
		m.h.Reset()
	} else {
		m = &macState{h: hmac.New(sha256.New, s.Key)}
	}
	if len(signed.ts) <= len(m.ts) {
		m.h.Write(m.ts[:copy(m.ts[:], signed.ts)])
	} else {
		_, _ = io.WriteString(m.h, signed.ts)
	}
	m.h.Write(dot)
	m.h.Write(body)
	want := m.h.Sum(m.sum[:0])
	ok := false
	for i := range signed.n {
		if hmac.Equal(want, signed.sig(i)) {
			ok = true
		}
	}
	return ok
}

var dot = []byte{'.'}

// Keyring hands out the secrets accepted right now. Accepted is called once
// per delivery: implementations are cheap and safe for concurrent use.
type Keyring interface {
	Accepted() []Secret
}

// Static is a Keyring that never changes: secrets given by hand.
type Static []Secret

// NewStatic returns the Static keyring of the given secrets.
func NewStatic(secrets []string) Static {
	s := make(Static, 0, len(secrets))
	for _, k := range secrets {
		s = append(s, NewSecret([]byte(k), ""))
	}
	return s
}

// Accepted returns s.
func (s Static) Accepted() []Secret { return s }

// Rotating is the Keyring of a managed registration: the current secret
// and, during a rotation's grace period, the previous one. Accepted is
// lock-free and allocation-free; Set and Clear replace the whole set at
// once.
type Rotating struct {
	now  func() time.Time
	snap atomic.Pointer[rotatingSnapshot]
}

type rotatingSnapshot struct {
	withPrevious  []Secret // until previousUntil
	current       []Secret // after it
	previousUntil time.Time
}

// NewRotating returns an empty keyring reading the clock with now
// (time.Now when nil).
func NewRotating(now func() time.Time) *Rotating {
	if now == nil {
		now = time.Now
	}
	k := &Rotating{now: now}
	k.snap.Store(&rotatingSnapshot{})
	return k
}

// Accepted returns the secrets accepted now.
func (k *Rotating) Accepted() []Secret {
	s := k.snap.Load()
	if !s.previousUntil.IsZero() && k.now().Before(s.previousUntil) {
		return s.withPrevious
	}
	return s.current
}

// Set makes current, and previous until previousUntil (when previous has a
// key), the accepted secrets.
func (k *Rotating) Set(current, previous Secret, previousUntil time.Time) {
	cur := []Secret{current}
	s := &rotatingSnapshot{current: cur, withPrevious: cur}
	if len(previous.Key) > 0 {
		s.withPrevious = []Secret{current, previous}
		s.previousUntil = previousUntil
	}
	k.snap.Store(s)
}

// Clear accepts no secret at all.
func (k *Rotating) Clear() { k.snap.Store(&rotatingSnapshot{}) }

// PreviousUntil is when the previous secret stops being accepted (zero when
// there is none).
func (k *Rotating) PreviousUntil() time.Time { return k.snap.Load().previousUntil }
