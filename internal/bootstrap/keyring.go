package bootstrap

import (
	"sync/atomic"
	"time"

	"github.com/datagrid-relay/relay/internal/ingress"
)

// Keyring holds the secrets the relay accepts, as the registration state
// says: the current secret and, during a rotation's grace period, the
// previous one. Keys is lock-free and allocation-free, for the delivery
// path; Set is called when the state changes.
type Keyring struct {
	now  func() time.Time
	snap atomic.Pointer[keySnapshot]
}

type keySnapshot struct {
	withPrevious ingress.Keys // until previousTill
	current      ingress.Keys // after it
	previousTill time.Time
}

// NewKeyring returns an empty keyring reading the clock with now.
func NewKeyring(now func() time.Time) *Keyring {
	k := &Keyring{now: now}
	k.snap.Store(&keySnapshot{})
	return k
}

// Keys returns the secrets accepted now.
func (k *Keyring) Keys() ingress.Keys {
	s := k.snap.Load()
	if !s.previousTill.IsZero() && k.now().Before(s.previousTill) {
		return s.withPrevious
	}
	return s.current
}

// Set makes st's secrets the accepted ones; a state without a secret clears
// the keyring.
func (k *Keyring) Set(st *State) {
	if st == nil || !st.Registered() {
		k.snap.Store(&keySnapshot{})
		return
	}
	cur := ingress.Keys{Secrets: [][]byte{[]byte(st.Secret)}, WebhookIDs: []string{st.WebhookID}}
	s := &keySnapshot{current: cur, withPrevious: cur}
	if p := st.Previous; p != nil && p.Secret != "" {
		s.withPrevious = ingress.Keys{
			Secrets:    [][]byte{[]byte(st.Secret), []byte(p.Secret)},
			WebhookIDs: []string{st.WebhookID, p.WebhookID},
		}
		s.previousTill = p.ExpiresAt
	}
	k.snap.Store(s)
}

// PreviousUntil is when the previous secret stops being accepted (zero when
// there is none).
func (k *Keyring) PreviousUntil() time.Time { return k.snap.Load().previousTill }
