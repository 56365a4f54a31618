package bootstrap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/natstest"
)

func TestSummaryNeverShowsSecrets(t *testing.T) {
	st := State{WebhookID: "wh_1", URL: "https://r.example.com/h", Events: []string{"a.b"}, Secret: "whsec_top",
		Previous: &Previous{WebhookID: "wh_0", Secret: "whsec_old", ExpiresAt: time.Now()}}
	if s := st.Summary(); strings.Contains(s, "whsec_") || !strings.Contains(s, "wh_1") || !strings.Contains(s, "wh_0") {
		t.Fatalf("summary: got %q", s)
	}
}

func TestStoreCompareAndSet(t *testing.T) {
	ns := natstest.Start(t, nil)
	js := natstest.JetStream(t, ns.ClientURL())
	s := NewStore(js, "test_bucket", 1)
	ctx := context.Background()

	if _, _, err := s.Load(ctx); !errors.Is(err, ErrNoState) {
		t.Fatalf("empty: got %v, want ErrNoState", err)
	}
	rev, err := s.Put(ctx, State{WebhookID: "wh_a", Secret: "s"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, State{WebhookID: "wh_b", Secret: "s"}, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: got %v, want ErrConflict", err)
	}
	if _, err := s.Put(ctx, State{WebhookID: "wh_c", Secret: "s"}, rev+7); !errors.Is(err, ErrConflict) {
		t.Fatalf("update at a wrong revision: got %v, want ErrConflict", err)
	}
	if _, err := s.Put(ctx, State{WebhookID: "wh_d", Secret: "s"}, rev); err != nil {
		t.Fatalf("update at the right revision: %v", err)
	}
	st, _, err := s.Load(ctx)
	if err != nil || st.WebhookID != "wh_d" || st.Version != stateVersion {
		t.Fatalf("load: got %+v %v, want wh_d at version %d", st.Summary(), err, stateVersion)
	}
}

func TestNewerStateLayoutIsRefused(t *testing.T) {
	_, err := decode([]byte(`{"version":99,"webhook_id":"wh"}`))
	if err == nil || !strings.Contains(err.Error(), "upgrade the relay") {
		t.Fatalf("got %v, want a refusal asking for an upgrade", err)
	}
}

func TestClaims(t *testing.T) {
	ns := natstest.Start(t, nil)
	js := natstest.JetStream(t, ns.ClientURL())
	api, err := datagridtest.Start(datagridtest.Options{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	client, err := datagrid.New(datagrid.Config{BaseURL: api.URL(), APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	store := NewStore(js, "claims", 1)
	r := NewRegistrar(client, store, Config{PublicURL: "https://r.example.com/h", Events: []string{"batch_prediction.completed"},
		ReconcileInterval: time.Minute, RotationGrace: time.Minute, Instance: "me", ClaimTimeout: time.Minute},
		zap.NewNop(), metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}), func() time.Time { return now })

	rev, err := store.Put(ctx, State{Pending: &Claim{By: "other", At: now}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx); !errors.Is(err, errInProgress) {
		t.Fatalf("fresh claim by another replica: got %v, want errInProgress", err)
	}
	if n := api.Count("POST", "/v1/webhooks"); n != 0 {
		t.Fatalf("creates while another replica registers: got %d, want 0", n)
	}

	now = now.Add(2 * time.Minute) // the other replica died mid-way
	outcome, err := r.Reconcile(ctx)
	if err != nil || outcome != ReconcileRepaired {
		t.Fatalf("stale claim: got %q %v, want it taken over", outcome, err)
	}
	st, newRev, _ := store.Load(ctx)
	if !st.Registered() || newRev <= rev || len(api.Webhooks()) != 1 {
		t.Fatalf("after takeover: got %s with %d webhooks, want one registered webhook", st.Summary(), len(api.Webhooks()))
	}
	if got := r.Keyring().Accepted(); len(got) != 1 || string(got[0].Key) != api.Secret(st.WebhookID) {
		t.Fatal("the keyring does not hold the new secret")
	}
}
