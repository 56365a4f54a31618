package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// stateKey is the one key of the bucket: the registration.
const stateKey = "registration"

// stateVersion is the layout of State; a relay refuses a newer one rather
// than misread it.
const stateVersion = 1

// State is the registration shared by every replica through the key-value
// bucket. It holds secrets: never log it, use Summary.
type State struct {
	Version int `json:"version"`
	// Pending is set while one replica creates the webhook; the others wait.
	Pending *Claim `json:"pending,omitempty"`

	WebhookID       string    `json:"webhook_id,omitempty"`
	URL             string    `json:"url,omitempty"`
	Events          []string  `json:"events,omitempty"`
	Secret          string    `json:"secret,omitempty"`
	SecretCreatedAt time.Time `json:"secret_created_at,omitzero"`
	// Previous is the webhook and secret replaced by relay rotate, accepted
	// until ExpiresAt and deleted at Datagrid after it.
	Previous  *Previous `json:"previous,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Deregistered is the uninstall marker left by relay deregister, with no
	// secret beside it: relays running when it appears stop registering.
	Deregistered *Claim `json:"deregistered,omitempty"`
}

// Claim marks a registration in progress, or a deregistration done: who
// and when.
type Claim struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// Previous is a rotated-out webhook in its grace period.
type Previous struct {
	WebhookID string    `json:"webhook_id"`
	Secret    string    `json:"secret"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Registered reports whether the state names a webhook whose secret is known.
func (s State) Registered() bool { return s.Pending == nil && s.WebhookID != "" && s.Secret != "" }

// Summary describes the state without its secrets, for logs and status.
func (s State) Summary() string {
	switch {
	case s.Deregistered != nil:
		return fmt.Sprintf("deregistered by %s at %s", s.Deregistered.By, s.Deregistered.At.Format(time.RFC3339))
	case s.Pending != nil:
		return fmt.Sprintf("registration in progress by %s since %s", s.Pending.By, s.Pending.At.Format(time.RFC3339))
	case !s.Registered():
		return "not registered"
	}
	out := fmt.Sprintf("webhook %s for %s, events %v, secret created %s", s.WebhookID, s.URL, s.Events, s.SecretCreatedAt.Format(time.RFC3339))
	if s.Previous != nil {
		out += fmt.Sprintf("; previous webhook %s accepted until %s", s.Previous.WebhookID, s.Previous.ExpiresAt.Format(time.RFC3339))
	}
	return out
}

// Errors of the store.
var (
	// ErrNoState means the bucket holds no registration.
	ErrNoState = errors.New("no registration stored")
	// ErrConflict means another replica changed the state first.
	ErrConflict = errors.New("registration changed concurrently")
)

// Store keeps the State in a JetStream key-value bucket. Every write is a
// compare-and-set on the revision read, so concurrent replicas never
// overwrite each other. The bucket is looked up, and created if missing, by
// every operation: no handle is cached, so a bucket deleted behind the
// relay's back is recreated by the next Load instead of failing forever.
// It is safe for concurrent use.
type Store struct {
	js       jetstream.JetStream
	bucket   string
	replicas int
}

// NewStore returns a Store on the bucket; replicas applies when the relay
// creates it.
func NewStore(js jetstream.JetStream, bucket string, replicas int) *Store {
	return &Store{js: js, bucket: bucket, replicas: replicas}
}

// kv looks the bucket up, creating it when it is missing.
func (s *Store) kv(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      s.bucket,
			Description: "datagrid-relay registration and signing secrets",
			History:     1, // compare-and-set needs only the latest; old secrets are not kept
			Replicas:    s.replicas,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, s.bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open key-value bucket %s: %w", s.bucket, err)
	}
	return kv, nil
}

// Load returns the state and its revision, or ErrNoState.
func (s *Store) Load(ctx context.Context) (State, uint64, error) {
	kv, err := s.kv(ctx)
	if err != nil {
		return State{}, 0, err
	}
	e, err := kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, ErrNoState
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("load registration: %w", err)
	}
	st, err := decode(e.Value())
	return st, e.Revision(), err
}

// Put writes st if the stored revision is still rev (0: if nothing is
// stored), returning the new revision or ErrConflict.
func (s *Store) Put(ctx context.Context, st State, rev uint64) (uint64, error) {
	kv, err := s.kv(ctx)
	if err != nil {
		return 0, err
	}
	st.Version = stateVersion
	// The secret is meant to be stored: the bucket is where replicas share
	// it, protected by NATS permissions.
	b, err := json.Marshal(st) //nolint:gosec // G117: storing the secret is the point

	if err != nil {
		return 0, fmt.Errorf("encode registration: %w", err)
	}
	var next uint64
	if rev == 0 {
		next, err = kv.Create(ctx, stateKey, b)
	} else {
		next, err = kv.Update(ctx, stateKey, b, rev)
	}
	if isConflict(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("store registration: %w", err)
	}
	return next, nil
}

// Watch calls fn with every change of the state until ctx ends: first the
// current state (nil when there is none), then each update, with its
// revision. It returns when ctx ends (nil) or the watch breaks (an error).
// A watch can also go quiet for good when its bucket is deleted: the caller
// compares the revisions it saw with Load's and restarts it.
func (s *Store) Watch(ctx context.Context, fn func(st *State, rev uint64)) error {
	kv, err := s.kv(ctx)
	if err != nil {
		return err
	}
	w, err := kv.Watch(ctx, stateKey)
	if err != nil {
		return fmt.Errorf("watch registration: %w", err)
	}
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch registration: updates ended")
			}
			switch {
			case e == nil: // the initial values are done
				if initial {
					fn(nil, 0)
				}
				initial = false
			case e.Operation() != jetstream.KeyValuePut:
				initial = false
				fn(nil, e.Revision())
			default:
				initial = false
				st, err := decode(e.Value())
				if err != nil {
					continue // an unreadable state counts as none; reconcile reports it
				}
				fn(&st, e.Revision())
			}
		}
	}
}

func decode(b []byte) (State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("decode registration: %w", err)
	}
	if st.Version > stateVersion {
		return State{}, fmt.Errorf("registration has layout version %d, this relay reads up to %d: upgrade the relay", st.Version, stateVersion)
	}
	return st, nil
}

// isConflict reports a compare-and-set that lost: the key exists, or its
// revision moved on.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
