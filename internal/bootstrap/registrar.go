// Package bootstrap registers the relay at Datagrid and keeps the
// registration true: exactly one enabled webhook for RELAY_PUBLIC_URL with
// exactly RELAY_EVENTS, whose signing secret every replica holds.
//
// The secret is shown by Datagrid once, when the webhook is created, so it
// lives in a JetStream key-value bucket (Store) that all replicas share.
// Every write to it is a compare-and-set: of N replicas starting together
// one claims the registration and creates the webhook, the others wait for
// the state and load it; a restart finds the state and creates nothing.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/metrics"
)

// API is the part of Datagrid's webhooks API the registrar uses;
// *datagrid.Client implements it.
type API interface {
	Create(ctx context.Context, url string, events []string) (datagrid.Webhook, error)
	Retrieve(ctx context.Context, id string) (datagrid.Webhook, error)
	Update(ctx context.Context, id string, u datagrid.Update) (datagrid.Webhook, error)
	List(ctx context.Context) ([]datagrid.Webhook, error)
	Delete(ctx context.Context, id string) error
}

// Config is what the registration must look like.
type Config struct {
	PublicURL         string
	Events            []string
	ReconcileInterval time.Duration
	RotationGrace     time.Duration
	// Instance names this process in claims, for status and logs.
	Instance string
	// ClaimTimeout is how long a registration in progress may take before
	// another replica takes it over (default 2m).
	ClaimTimeout time.Duration
}

// Registrar reconciles the registration. It is safe for concurrent use.
type Registrar struct {
	api     API
	store   *Store
	keys    *Keyring
	cfg     Config
	log     *zap.Logger
	metrics *metrics.Metrics
	now     func() time.Time

	// deregistered is set when the state is deleted while the relay runs
	// (relay deregister during an uninstall): it then stops re-registering
	// until restarted, so an uninstall leaves nothing behind.
	deregistered atomic.Bool
	changed      chan struct{} // a state change was watched

	mu      sync.Mutex
	lastErr error
}

// NewRegistrar returns a Registrar. now defaults to time.Now.
func NewRegistrar(api API, store *Store, cfg Config, log *zap.Logger, m *metrics.Metrics, now func() time.Time) *Registrar {
	if now == nil {
		now = time.Now
	}
	if cfg.ClaimTimeout == 0 {
		cfg.ClaimTimeout = 2 * time.Minute
	}
	return &Registrar{
		api: api, store: store, keys: NewKeyring(now), cfg: cfg, log: log, metrics: m, now: now,
		changed: make(chan struct{}, 1), lastErr: errors.New("not registered yet"),
	}
}

// Keys is the keyring the delivery handler verifies with.
func (r *Registrar) Keys() *Keyring { return r.keys }

// Errors of a reconcile.
var (
	// errInProgress means another replica is registering; wait for it.
	errInProgress = errors.New("another replica is registering the webhook")
	// errDeregistered means relay deregister removed the registration while
	// this relay ran.
	errDeregistered = errors.New("deregistered by relay deregister; restart the relay to register again")
)

// FatalError is a refusal no retry can mend: the API key was rejected.
type FatalError struct{ Err error }

func (e *FatalError) Error() string {
	return "Datagrid rejected DATAGRID_API_KEY, check the key: " + e.Err.Error()
}

func (e *FatalError) Unwrap() error { return e.Err }

// Run keeps the keyring in step with the stored state and reconciles at
// start and every ReconcileInterval until ctx ends. A rejected API key
// before the first successful reconcile returns a *FatalError; afterwards it
// is logged and counted, and the relay goes on serving with its secret.
func (r *Registrar) Run(ctx context.Context) error {
	watchDone := make(chan struct{})
	defer func() { <-watchDone }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs first: stops the watch before it is waited for
	go func() { defer close(watchDone); r.watch(ctx) }()

	started := false
	retry := time.Second
	for {
		outcome, err := r.Reconcile(ctx)
		r.record(outcome, err)
		var wait time.Duration
		switch {
		case err == nil:
			started, retry = true, time.Second
			wait = r.nextReconcile()
		case errors.Is(err, errDeregistered):
			wait = r.cfg.ReconcileInterval
		case errors.Is(err, errInProgress):
			wait = 500 * time.Millisecond
		case !started && datagrid.IsAuth(err):
			return &FatalError{Err: err}
		default:
			r.log.Warn("registration not reconciled, retrying", zap.Error(err), zap.Duration("retry_in", retry))
			wait, retry = retry, min(retry*2, r.cfg.ReconcileInterval)
		}
		if !r.wait(ctx, wait, err != nil) {
			return nil
		}
	}
}

// wait sleeps until the next reconcile is due, and reports false when ctx
// ended instead. A watched state change cuts the wait short after a failed
// reconcile (the state we waited for may be there), and otherwise only
// brings it forward to the end of a rotation's grace period.
func (r *Registrar) wait(ctx context.Context, d time.Duration, failed bool) bool {
	deadline := r.now().Add(d)
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-r.changed:
			if failed {
				return true
			}
			if until := r.keys.PreviousUntil().Add(10 * time.Millisecond); until.After(r.now()) && until.Before(deadline) {
				deadline = until
				timer.Reset(until.Sub(r.now()))
			}
		}
	}
}

// watch follows the stored state into the keyring until ctx ends, starting
// again after NATS trouble.
func (r *Registrar) watch(ctx context.Context) {
	retry := 250 * time.Millisecond
	for {
		err := r.store.Watch(ctx, r.onState)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("registration watch stopped, restarting", zap.Error(err), zap.Duration("retry_in", retry))
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(retry*2, 10*time.Second)
	}
}

// nextReconcile is the interval with ±10% jitter, so replicas spread their
// calls, or sooner when a rotated-out webhook's grace period ends.
func (r *Registrar) nextReconcile() time.Duration {
	d := time.Duration(float64(r.cfg.ReconcileInterval) * (0.9 + 0.2*rand.Float64())) //nolint:gosec // jitter, not security
	if until := r.keys.PreviousUntil(); until.After(r.now()) {
		d = min(d, until.Sub(r.now())+10*time.Millisecond)
	}
	return d
}

// onState takes a watched state change.
func (r *Registrar) onState(st *State, deleted bool) {
	r.use(st)
	if deleted {
		r.deregistered.Store(true)
		r.log.Warn("registration deleted while running (relay deregister): not registering again until restart")
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// use makes st's secrets the accepted ones, with the metrics that describe
// them: the one place the keyring changes.
func (r *Registrar) use(st *State) {
	r.keys.Set(st)
	r.metrics.Secrets.Set(float64(len(r.keys.Keys().Secrets)))
	if st != nil && st.Registered() {
		r.metrics.SecretCreated.Set(float64(st.SecretCreatedAt.Unix()))
	}
}

func (r *Registrar) record(outcome string, err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	switch {
	case errors.Is(err, errInProgress):
		return // neither a success nor a failure
	case err != nil:
		r.metrics.Reconciles.WithLabelValues(metrics.ReconcileFailed).Inc()
		r.metrics.RegistrationHealthy.Set(0)
		return
	}
	r.metrics.Reconciles.WithLabelValues(outcome).Inc()
	r.metrics.RegistrationHealthy.Set(1)
	r.metrics.LastReconcileSuccess.SetToCurrentTime()
	if outcome == metrics.ReconcileRepaired {
		r.log.Info("registration repaired")
	}
}

// Check is the readiness check: nil when a secret is known, else why not.
func (r *Registrar) Check(context.Context) error {
	if len(r.keys.Keys().Secrets) > 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr != nil {
		return fmt.Errorf("no signing secret known yet: %w", r.lastErr)
	}
	return errors.New("no signing secret known yet")
}

// Reconcile makes the registration true once and says whether anything had
// to change (metrics.ReconcileOK or ReconcileRepaired).
func (r *Registrar) Reconcile(ctx context.Context) (string, error) {
	if r.deregistered.Load() {
		return "", errDeregistered
	}
	st, rev, err := r.store.Load(ctx)
	switch {
	case errors.Is(err, ErrNoState):
		return r.register(ctx, 0, "no registration stored")
	case err != nil:
		return "", err
	case st.Pending != nil && r.now().Sub(st.Pending.At) < r.cfg.ClaimTimeout:
		return "", errInProgress
	case st.Pending != nil:
		return r.register(ctx, rev, "registration by "+st.Pending.By+" never finished")
	case !st.Registered():
		return r.register(ctx, rev, "stored registration has no secret")
	}

	outcome := metrics.ReconcileOK
	wh, err := r.api.Retrieve(ctx, st.WebhookID)
	if datagrid.IsNotFound(err) {
		return r.register(ctx, rev, "webhook "+st.WebhookID+" was deleted at Datagrid")
	}
	if err != nil {
		return "", err
	}
	if fix, what := r.drift(wh); what != "" {
		if _, err := r.api.Update(ctx, wh.ID, fix); err != nil {
			return "", fmt.Errorf("repair webhook %s (%s): %w", wh.ID, what, err)
		}
		r.log.Warn("webhook drifted at Datagrid, repaired", zap.String("webhook_id", wh.ID), zap.String("drift", what))
		outcome = metrics.ReconcileRepaired
	}
	if st.URL != r.cfg.PublicURL || !slices.Equal(st.Events, r.cfg.Events) {
		next := st
		next.URL, next.Events, next.UpdatedAt = r.cfg.PublicURL, r.cfg.Events, r.now()
		if rev, err = r.store.Put(ctx, next, rev); err != nil {
			return "", err
		}
		st = next
	}
	if p := st.Previous; p != nil && !r.now().Before(p.ExpiresAt) {
		if err := r.deleteWebhook(ctx, p.WebhookID); err != nil {
			return "", err
		}
		next := st
		next.Previous, next.UpdatedAt = nil, r.now()
		if _, err := r.store.Put(ctx, next, rev); err != nil {
			return "", err
		}
		r.log.Info("rotation grace over: previous webhook deleted", zap.String("webhook_id", p.WebhookID))
		st, outcome = next, metrics.ReconcileRepaired
	}
	removed, err := r.removeStrays(ctx, st)
	if err != nil {
		return "", err
	}
	if removed > 0 {
		outcome = metrics.ReconcileRepaired
	}
	return outcome, nil
}

// drift says how wh differs from what it should be, and the update that
// repairs it ("" when it does not).
func (r *Registrar) drift(wh datagrid.Webhook) (datagrid.Update, string) {
	var u datagrid.Update
	what := ""
	if !wh.Enabled {
		enabled := true
		u.Enabled, what = &enabled, "disabled"
	}
	if wh.URL != r.cfg.PublicURL {
		url := r.cfg.PublicURL
		u.URL, what = &url, join(what, "url changed")
	}
	if !sameSet(wh.Events, r.cfg.Events) {
		u.Events, what = r.cfg.Events, join(what, "events changed")
	}
	return u, what
}

// register claims the registration at revision rev (0: none stored),
// creates a webhook and stores it with its secret.
func (r *Registrar) register(ctx context.Context, rev uint64, why string) (string, error) {
	claimRev, err := r.store.Put(ctx, State{Pending: &Claim{By: r.cfg.Instance, At: r.now()}}, rev)
	if errors.Is(err, ErrConflict) {
		return "", errInProgress
	}
	if err != nil {
		return "", err
	}
	r.log.Info("registering webhook at Datagrid", zap.String("reason", why), zap.String("url", r.cfg.PublicURL), zap.Strings("events", r.cfg.Events))
	wh, err := r.api.Create(ctx, r.cfg.PublicURL, r.cfg.Events)
	if err != nil {
		// Give the claim up, so the next try (ours or another replica's)
		// need not wait for it to time out.
		_, _ = r.store.Put(context.WithoutCancel(ctx), State{}, claimRev)
		return "", err
	}
	st := State{
		WebhookID: wh.ID, URL: r.cfg.PublicURL, Events: r.cfg.Events,
		Secret: wh.Secret, SecretCreatedAt: r.now(), UpdatedAt: r.now(),
	}
	if _, err := r.store.Put(ctx, st, claimRev); err != nil {
		// Our claim was taken over meanwhile: this webhook is nobody's.
		_ = r.deleteWebhook(context.WithoutCancel(ctx), wh.ID)
		return "", fmt.Errorf("store new registration: %w", err)
	}
	r.use(&st)
	r.log.Info("webhook registered", zap.String("webhook_id", wh.ID))
	if _, err := r.removeStrays(ctx, st); err != nil {
		return "", err
	}
	return metrics.ReconcileRepaired, nil
}

// removeStrays deletes every webhook for our URL that the state does not
// name: its secret is unknown, so its deliveries could never be verified.
func (r *Registrar) removeStrays(ctx context.Context, st State) (int, error) {
	all, err := r.api.List(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, wh := range all {
		if wh.URL != r.cfg.PublicURL || wh.ID == st.WebhookID || (st.Previous != nil && wh.ID == st.Previous.WebhookID) {
			continue
		}
		if err := r.deleteWebhook(ctx, wh.ID); err != nil {
			return removed, err
		}
		r.log.Warn("deleted a webhook for our URL whose secret is unknown", zap.String("webhook_id", wh.ID))
		removed++
	}
	return removed, nil
}

func (r *Registrar) deleteWebhook(ctx context.Context, id string) error {
	if err := r.api.Delete(ctx, id); err != nil && !datagrid.IsNotFound(err) {
		return err
	}
	return nil
}

// Rotate replaces the webhook and its secret with new ones. Both secrets
// are accepted for RotationGrace; the old webhook is deleted after it by
// the running relays' reconcile. During the overlap Datagrid may deliver an
// event through both webhooks; the stream's deduplication stores it once.
func (r *Registrar) Rotate(ctx context.Context) (State, error) {
	st, rev, err := r.store.Load(ctx)
	if err != nil {
		return State{}, err
	}
	if !st.Registered() {
		return State{}, errors.New("nothing to rotate: " + st.Summary())
	}
	if st.Previous != nil && r.now().Before(st.Previous.ExpiresAt) {
		return State{}, fmt.Errorf("a rotation is still in its grace period until %s", st.Previous.ExpiresAt.Format(time.RFC3339))
	}
	if st.Previous != nil {
		if err := r.deleteWebhook(ctx, st.Previous.WebhookID); err != nil {
			return State{}, err
		}
	}
	wh, err := r.api.Create(ctx, r.cfg.PublicURL, r.cfg.Events)
	if err != nil {
		return State{}, err
	}
	next := State{
		WebhookID: wh.ID, URL: r.cfg.PublicURL, Events: r.cfg.Events,
		Secret: wh.Secret, SecretCreatedAt: r.now(), UpdatedAt: r.now(),
		Previous: &Previous{WebhookID: st.WebhookID, Secret: st.Secret, ExpiresAt: r.now().Add(r.cfg.RotationGrace)},
	}
	if _, err := r.store.Put(ctx, next, rev); err != nil {
		_ = r.deleteWebhook(context.WithoutCancel(ctx), wh.ID)
		return State{}, fmt.Errorf("store rotated registration: %w", err)
	}
	return next, nil
}

// Deregister deletes every webhook for our URL at Datagrid, the stored
// ones first, then the stored state. It returns the ids deleted.
func (r *Registrar) Deregister(ctx context.Context) ([]string, error) {
	st, rev, err := r.store.Load(ctx)
	if err != nil && !errors.Is(err, ErrNoState) {
		return nil, err
	}
	var ids []string
	if st.WebhookID != "" {
		ids = append(ids, st.WebhookID)
	}
	if st.Previous != nil {
		ids = append(ids, st.Previous.WebhookID)
	}
	all, err := r.api.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, wh := range all {
		if wh.URL == r.cfg.PublicURL && !slices.Contains(ids, wh.ID) {
			ids = append(ids, wh.ID)
		}
	}
	for _, id := range ids {
		if err := r.deleteWebhook(ctx, id); err != nil {
			return nil, err
		}
	}
	if rev != 0 {
		if err := r.store.Purge(ctx); err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// State returns the stored registration (secrets included: never log it).
func (r *Registrar) State(ctx context.Context) (State, error) {
	st, _, err := r.store.Load(ctx)
	return st, err
}

// Report is the registration as seen from the store and from Datagrid.
type Report struct {
	State   State
	Stored  bool
	Webhook *datagrid.Webhook // nil when Datagrid does not know it
	Strays  []string          // other webhooks for our URL
	// Problems lists what is wrong; empty means healthy.
	Problems []string
}

// Status reads the state and asks Datagrid about it.
func (r *Registrar) Status(ctx context.Context) (Report, error) {
	var rep Report
	st, _, err := r.store.Load(ctx)
	switch {
	case errors.Is(err, ErrNoState):
		rep.Problems = append(rep.Problems, "no registration stored: no relay has registered yet")
		return rep, nil
	case err != nil:
		return rep, err
	}
	rep.State, rep.Stored = st, true
	if !st.Registered() {
		rep.Problems = append(rep.Problems, st.Summary())
		return rep, nil
	}
	wh, err := r.api.Retrieve(ctx, st.WebhookID)
	switch {
	case datagrid.IsNotFound(err):
		rep.Problems = append(rep.Problems, "webhook "+st.WebhookID+" does not exist at Datagrid")
	case err != nil:
		return rep, err
	default:
		rep.Webhook = &wh
		if _, what := r.drift(wh); what != "" {
			rep.Problems = append(rep.Problems, "webhook "+wh.ID+" at Datagrid: "+what)
		}
	}
	all, err := r.api.List(ctx)
	if err != nil {
		return rep, err
	}
	for _, w := range all {
		if w.URL == r.cfg.PublicURL && w.ID != st.WebhookID && (st.Previous == nil || w.ID != st.Previous.WebhookID) {
			rep.Strays = append(rep.Strays, w.ID)
		}
	}
	if len(rep.Strays) > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d other webhook(s) for our URL with unknown secrets: %v", len(rep.Strays), rep.Strays))
	}
	return rep, nil
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}
