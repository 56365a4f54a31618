package signature

import (
	"testing"
	"time"
)

func TestRotatingAcceptsThePreviousSecretUntilItExpires(t *testing.T) {
	now := time.Unix(1775847600, 0)
	k := NewRotating(func() time.Time { return now })
	if got := k.Accepted(); len(got) != 0 {
		t.Fatalf("empty keyring: got %d secrets, want 0", len(got))
	}
	cur := Secret{Key: []byte("new"), WebhookID: "wh_new"}
	prev := Secret{Key: []byte("old"), WebhookID: "wh_old"}
	k.Set(cur, prev, now.Add(time.Minute))
	if got := k.Accepted(); len(got) != 2 || got[1].WebhookID != "wh_old" {
		t.Fatalf("in grace: got %+v, want new and old", got)
	}
	now = now.Add(time.Minute)
	if got := k.Accepted(); len(got) != 1 || got[0].WebhookID != "wh_new" {
		t.Fatalf("after grace: got %+v, want only new", got)
	}
	k.Clear()
	if got := k.Accepted(); len(got) != 0 {
		t.Fatalf("cleared: got %+v", got)
	}
}

func TestStatic(t *testing.T) {
	s := NewStatic([]string{"a", "b"})
	if got := s.Accepted(); len(got) != 2 || string(got[1].Key) != "b" || got[0].WebhookID != "" {
		t.Fatalf("got %+v", got)
	}
}
