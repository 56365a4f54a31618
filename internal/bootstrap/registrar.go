// Package bootstrap registers the relay at Datagrid and keeps the
// registration true: exactly one enabled webhook for RELAY_PUBLIC_URL with
// exactly RELAY_EVENTS, whose signing secret every replica holds.
//
// The secret is shown by Datagrid once, when the webhook is created, so it
// lives in a JetStream key-value bucket (Store) that all replicas share.
// Every write to it is a compare-and-set: of N replicas starting together
// one claims the registration and creates the webhook, the others wait for
// the state and load it; a restart finds the state and creates nothing.
//
// Each replica follows the stored state into its keyring three ways: a
// watch (at once), every reconcile (with the state it loaded), and a sync
// every few seconds that also notices a deleted bucket or a watch that went
// quiet. No replica keeps a secret the store no longer names for longer
// than a sync, except to write it back when the store lost it.
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
	"github.com/datagrid-relay/relay/internal/signature"
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
	// SyncInterval is how often the stored state is read into the keyring
	// besides the watch (default 5s).
	SyncInterval time.Duration
	// MaxCreates bounds the webhooks this replica creates within one
	// ReconcileInterval (default 3), whatever the API answers.
	MaxCreates int
}

// Outcome is the outcome label of datagrid_relay_reconciles_total.
type Outcome string

// Reconcile outcomes.
const (
	ReconcileOK       Outcome = "ok"       // the webhook at Datagrid was as wanted
	ReconcileRepaired Outcome = "repaired" // something was created, re-enabled, restored or replaced
	ReconcileFailed   Outcome = "failed"   // the reconcile could not finish; it is retried
)

// Registrar reconciles the registration. It is safe for concurrent use.
type Registrar struct {
	api     API
	store   *Store
	keys    *signature.Rotating
	cfg     Config
	log     *zap.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	started time.Time // a deregistration marker older than this is a past uninstall

	// deregistered is set when relay deregister's marker appears while the
	// relay runs (an uninstall): it then stops registering until restarted,
	// so an uninstall leaves nothing behind.
	deregistered atomic.Bool
	changed      chan struct{} // a state change was watched
	kick         chan struct{} // the sync found the registration gone
	watchRev     atomic.Uint64 // the last revision the watch delivered

	// refreshMu orders every read of the state that reaches the keyring:
	// a read applied under it can never be older than one applied before.
	refreshMu sync.Mutex

	mu      sync.Mutex
	lastErr error
	known   State // the last registered state applied: restored if the store loses it
	creates []time.Time
}

// NewRegistrar returns a Registrar. now defaults to time.Now.
func NewRegistrar(api API, store *Store, cfg Config, log *zap.Logger, m *metrics.Metrics, now func() time.Time) *Registrar {
	if now == nil {
		now = time.Now
	}
	if cfg.ClaimTimeout == 0 {
		cfg.ClaimTimeout = 2 * time.Minute
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 5 * time.Second
	}
	if cfg.MaxCreates == 0 {
		cfg.MaxCreates = 3
	}
	for _, o := range []Outcome{ReconcileOK, ReconcileRepaired, ReconcileFailed} {
		m.Reconciles.WithLabelValues(string(o))
	}
	return &Registrar{
		api: api, store: store, keys: signature.NewRotating(now), cfg: cfg, log: log, metrics: m, now: now, started: now(),
		changed: make(chan struct{}, 1), kick: make(chan struct{}, 1), lastErr: errors.New("not registered yet"),
	}
}

// Keyring is the keyring the delivery handler verifies with.
func (r *Registrar) Keyring() *signature.Rotating { return r.keys }

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
	var bg sync.WaitGroup
	defer bg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs first: stops the watch and the sync before they are waited for
	restartWatch := make(chan struct{}, 1)
	bg.Go(func() { r.watch(ctx, restartWatch) })
	bg.Go(func() { r.sync(ctx, restartWatch) })

	started := false
	retry := time.Second
	for {
		outcome, err := r.Reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.record(outcome, err)
		var wait time.Duration
		wake := false // may a watched change or a kick end the wait early?
		switch {
		case err == nil:
			started, retry = true, time.Second
			wait, wake = r.nextReconcile(), true
		case errors.Is(err, errDeregistered):
			wait = r.cfg.ReconcileInterval
		case errors.Is(err, errInProgress):
			wait, wake = 500*time.Millisecond, true
		case !started && datagrid.IsAuth(err):
			return &FatalError{Err: err}
		default:
			// Backoff and the API's Retry-After are floors: nothing, not
			// even our own writes to the state, cuts this wait short.
			wait = max(retry, r.retryFloor(err))
			r.log.Warn("registration not reconciled, retrying", zap.Error(err), zap.Duration("retry_in", wait))
			retry = min(retry*2, r.cfg.ReconcileInterval)
		}
		if !r.wait(ctx, wait, wake) {
			return nil
		}
	}
}

// minReconcileGap is the least time between two reconciles, whatever wakes
// the loop.
const minReconcileGap = 250 * time.Millisecond

// wait sleeps for d and reports false when ctx ended instead. With wake, a
// kick from the sync (the registration is gone) ends it early, and a watched
// state change brings it forward to the end of a rotation's grace period
// or, while another replica registers, ends it; never before
// minReconcileGap.
func (r *Registrar) wait(ctx context.Context, d time.Duration, wake bool) bool {
	floor := time.NewTimer(min(d, minReconcileGap))
	select {
	case <-ctx.Done():
		floor.Stop()
		return false
	case <-floor.C:
	}
	d -= min(d, minReconcileGap)
	deadline := r.now().Add(d)
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		var changed, kick chan struct{}
		if wake {
			changed, kick = r.changed, r.kick
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-kick:
			return true
		case <-changed:
			if d <= time.Second { // waiting for another replica's registration
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
// again whenever it ends or the sync finds it has gone quiet.
func (r *Registrar) watch(ctx context.Context, restart <-chan struct{}) {
	retry := 250 * time.Millisecond
	for {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- r.store.Watch(wctx, func(_ *State, rev uint64) { r.onChange(wctx, rev) })
		}()
		var err error
		select {
		case err = <-done:
		case <-restart:
			cancel()
			if werr := <-done; werr != nil { // ended by our cancel: only worth a debug line
				r.log.Debug("registration watch ended", zap.Error(werr))
			}
			err = errors.New("it fell behind the stored state")
			retry = 250 * time.Millisecond
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("registration watch stopped, restarting", zap.Error(err), zap.Duration("retry_in", retry))
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		case <-restart: // the sync saw the store move on: try now, not after a long backoff
		}
		retry = min(retry*2, 10*time.Second)
	}
}

// sync reads the stored state into the keyring every SyncInterval, so that
// neither a quiet watch nor a deleted bucket can leave a replica with a
// secret the store no longer names. It restarts the watch when the watch
// missed a revision, and kicks the reconcile when the registration is
// gone from the store.
func (r *Registrar) sync(ctx context.Context, restartWatch chan<- struct{}) {
	behind := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.SyncInterval):
		}
		_, rev, err := r.refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrNoState):
			// The bucket was deleted or emptied behind our back: keep the
			// secret we have while the reconcile writes it back.
			r.metrics.RegistrationHealthy.Set(0)
			r.signal(r.kick)
			continue
		case err != nil:
			r.log.Warn("registration state unreadable", zap.Error(err))
			continue
		}
		if rev != r.watchRev.Load() {
			if behind++; behind >= 2 { // once may be a race with an update in flight
				behind = 0
				r.signal(restartWatch)
			}
		} else {
			behind = 0
		}
	}
}

func (r *Registrar) signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
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

// onChange takes a watched state change: the watch only says that the
// state changed; refresh reads it, so that an update the watch delivers
// late cannot undo a newer one.
func (r *Registrar) onChange(ctx context.Context, rev uint64) {
	r.watchRev.Store(rev)
	_, _, _ = r.refresh(ctx)
	r.signal(r.changed)
}

// refresh reads the stored state and puts it into the keyring, in the
// order of the reads: of two refreshes racing, the later read is applied
// last. A missing registration leaves the keyring as it is (see sync).
func (r *Registrar) refresh(ctx context.Context) (State, uint64, error) {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	st, rev, err := r.store.Load(ctx)
	if err == nil {
		r.apply(&st)
	}
	return st, rev, err
}

// apply makes st's secrets the accepted ones, with the metrics that describe
// them: the one place the keyring changes. A claim keeps the secrets it
// carries; a deregistration marker newer than this process clears them and
// stops registering.
func (r *Registrar) apply(st *State) {
	if m := st.Deregistered; m != nil {
		if m.At.After(r.started) && !r.deregistered.Swap(true) {
			r.log.Warn("registration deleted while running (relay deregister): not registering again until restart")
		}
		if r.deregistered.Load() {
			r.keys.Clear()
		}
		return
	}
	if st.WebhookID == "" || st.Secret == "" {
		if st.Pending == nil { // a claim without secrets leaves the keyring as it is
			r.keys.Clear()
		}
	} else {
		var prev signature.Secret
		var until time.Time
		if p := st.Previous; p != nil && p.Secret != "" {
			prev, until = signature.NewSecret([]byte(p.Secret), p.WebhookID), p.ExpiresAt
		}
		r.keys.Set(signature.NewSecret([]byte(st.Secret), st.WebhookID), prev, until)
		r.mu.Lock()
		r.known = *st
		r.known.Pending = nil
		r.mu.Unlock()
		r.metrics.SecretCreated.Set(float64(st.SecretCreatedAt.Unix()))
	}
}

func (r *Registrar) record(outcome Outcome, err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	switch {
	case errors.Is(err, errInProgress):
		return // neither a success nor a failure
	case err != nil:
		r.metrics.Reconciles.WithLabelValues(string(ReconcileFailed)).Inc()
		r.metrics.RegistrationHealthy.Set(0)
		return
	}
	r.metrics.Reconciles.WithLabelValues(string(outcome)).Inc()
	r.metrics.RegistrationHealthy.Set(1)
	r.metrics.LastReconcileSuccess.SetToCurrentTime()
	if outcome == ReconcileRepaired {
		r.log.Info("registration repaired")
	}
}

// Check is the readiness check: nil when a secret is known, else why not.
func (r *Registrar) Check() error {
	if len(r.keys.Accepted()) > 0 {
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
// to change.
func (r *Registrar) Reconcile(ctx context.Context) (Outcome, error) {
	if r.deregistered.Load() {
		return "", errDeregistered
	}
	st, rev, err := r.refresh(ctx) // every reconcile leaves the keyring as the store says
	switch {
	case errors.Is(err, ErrNoState):
		if restored, ok := r.restore(ctx); ok {
			st, rev = restored.st, restored.rev
			break
		}
		return r.register(ctx, 0, State{}, "no registration stored")
	case err != nil:
		return "", err
	}
	switch {
	case r.deregistered.Load():
		return "", errDeregistered
	case st.Pending != nil && r.now().Sub(st.Pending.At) < r.cfg.ClaimTimeout:
		return "", errInProgress
	case st.Pending != nil:
		return r.register(ctx, rev, st, "registration by "+st.Pending.By+" never finished")
	case st.Deregistered != nil:
		return r.register(ctx, rev, State{}, "deregistered before this relay started")
	case !st.Registered():
		return r.register(ctx, rev, st, "stored registration has no secret")
	}

	outcome := ReconcileOK
	wh, err := r.api.Retrieve(ctx, st.WebhookID)
	if datagrid.IsNotFound(err) {
		return r.register(ctx, rev, st, "webhook "+st.WebhookID+" was deleted at Datagrid")
	}
	if err != nil {
		return "", err
	}
	if fix, what := r.drift(wh); what != "" {
		if _, err := r.api.Update(ctx, wh.ID, fix); err != nil {
			return "", fmt.Errorf("repair webhook %s (%s): %w", wh.ID, what, err)
		}
		r.log.Warn("webhook drifted at Datagrid, repaired", zap.String("webhook_id", wh.ID), zap.String("drift", what))
		outcome = ReconcileRepaired
	}
	if st.URL != r.cfg.PublicURL || !slices.Equal(st.Events, r.cfg.Events) {
		next := st
		next.URL, next.Events, next.UpdatedAt = r.cfg.PublicURL, r.cfg.Events, r.now()
		if rev, err = r.store.Put(ctx, next, rev); err != nil {
			return "", err
		}
		st = next
	}
	if expired, err := r.expirePrevious(ctx, st, rev); err != nil {
		return "", err
	} else if expired {
		outcome = ReconcileRepaired
	}
	removed, err := r.removeStrays(ctx)
	if err != nil {
		return "", err
	}
	if removed > 0 {
		outcome = ReconcileRepaired
	}
	return outcome, nil
}

// expirePrevious forgets a rotated-out webhook whose grace period is over,
// then deletes it at Datagrid: the state first, so that a conflict (the
// state moved on meanwhile) deletes nothing.
func (r *Registrar) expirePrevious(ctx context.Context, st State, rev uint64) (bool, error) {
	p := st.Previous
	if p == nil || r.now().Before(p.ExpiresAt) {
		return false, nil
	}
	next := st
	next.Previous, next.UpdatedAt = nil, r.now()
	if _, err := r.store.Put(ctx, next, rev); err != nil {
		return false, err
	}
	if err := r.deleteWebhook(ctx, p.WebhookID); err != nil {
		return false, err
	}
	r.log.Info("rotation grace over: previous webhook deleted", zap.String("webhook_id", p.WebhookID))
	return true, nil
}

type loaded struct {
	st  State
	rev uint64
}

// restore writes back the last registration this replica applied when the
// store lost it (its bucket deleted without relay deregister's marker): the
// webhook and its secret are still good, so nothing has to be created.
func (r *Registrar) restore(ctx context.Context) (loaded, bool) {
	r.mu.Lock()
	known := r.known
	r.mu.Unlock()
	if !known.Registered() {
		return loaded{}, false
	}
	known.UpdatedAt = r.now()
	rev, err := r.store.Put(ctx, known, 0)
	if err != nil {
		return loaded{}, false // another replica was first, or NATS is down: register decides
	}
	r.log.Warn("registration was missing from the store (bucket deleted?): restored it", zap.String("webhook_id", known.WebhookID))
	return loaded{known, rev}, true
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

// createBudgetError refuses a create past Config.MaxCreates.
type createBudgetError struct {
	n      int
	window time.Duration
	until  time.Time
}

func (e *createBudgetError) Error() string {
	return fmt.Sprintf("webhook create budget spent: %d creates in the last %s; not creating another before %s",
		e.n, e.window, e.until.Format(time.RFC3339))
}

// takeCreate reserves one webhook create within the budget of MaxCreates
// per ReconcileInterval (a minute at least). Every attempt counts, answered
// or not: whatever the API does, the relay cannot create webhooks in a loop.
func (r *Registrar) takeCreate() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	window := max(r.cfg.ReconcileInterval, time.Minute)
	r.creates = slices.DeleteFunc(r.creates, func(t time.Time) bool { return r.now().Sub(t) >= window })
	if len(r.creates) >= r.cfg.MaxCreates {
		return &createBudgetError{n: len(r.creates), window: window, until: r.creates[0].Add(window)}
	}
	r.creates = append(r.creates, r.now())
	return nil
}

// retryFloor is the least wait before retrying after err: what the API
// asked for, or until the create budget allows another create.
func (r *Registrar) retryFloor(err error) time.Duration {
	var budget *createBudgetError
	if errors.As(err, &budget) {
		return budget.until.Sub(r.now())
	}
	return datagrid.RetryAfter(err)
}

// register claims the registration at revision rev (0: none stored),
// creates a webhook and stores it with its secret. The claim keeps the
// secrets of prev, and a previous secret still in its grace period stays
// accepted in the new state.
func (r *Registrar) register(ctx context.Context, rev uint64, prev State, why string) (Outcome, error) {
	if err := r.takeCreate(); err != nil {
		return "", err
	}
	claim := prev
	claim.Pending, claim.Deregistered = &Claim{By: r.cfg.Instance, At: r.now()}, nil
	claimRev, err := r.store.Put(ctx, claim, rev)
	if errors.Is(err, ErrConflict) {
		return "", errInProgress
	}
	if err != nil {
		return "", err
	}
	r.log.Info("registering webhook at Datagrid", zap.String("reason", why), zap.String("url", r.cfg.PublicURL), zap.Strings("events", r.cfg.Events))
	wh, err := r.api.Create(ctx, r.cfg.PublicURL, r.cfg.Events)
	if err != nil {
		if wh.ID != "" { // created but unusable (no secret): it must not linger
			_ = r.deleteWebhook(context.WithoutCancel(ctx), wh.ID)
		}
		// Give the claim up, so the next try (ours or another replica's)
		// need not wait for it to time out.
		claim.Pending = nil
		_, _ = r.store.Put(context.WithoutCancel(ctx), claim, claimRev)
		return "", err
	}
	st := State{
		WebhookID: wh.ID, URL: r.cfg.PublicURL, Events: r.cfg.Events,
		Secret: wh.Secret, SecretCreatedAt: r.now(), UpdatedAt: r.now(),
	}
	if p := prev.Previous; p != nil && r.now().Before(p.ExpiresAt) {
		st.Previous = p
	}
	if _, err := r.store.Put(ctx, st, claimRev); err != nil {
		// Our claim was taken over meanwhile: this webhook is nobody's.
		_ = r.deleteWebhook(context.WithoutCancel(ctx), wh.ID)
		return "", fmt.Errorf("store new registration: %w", err)
	}
	_, _, _ = r.refresh(ctx) // our state, or a newer one: never an older one
	r.log.Info("webhook registered", zap.String("webhook_id", wh.ID))
	if _, err := r.removeStrays(ctx); err != nil {
		return "", err
	}
	return ReconcileRepaired, nil
}

// names reports whether st names webhook id as its current or previous one.
func (st State) names(id string) bool {
	return id == st.WebhookID || (st.Previous != nil && id == st.Previous.WebhookID)
}

// strays lists the webhooks for our URL that st does not name.
func (r *Registrar) strays(all []datagrid.Webhook, st State) []string {
	var ids []string
	for _, wh := range all {
		if wh.URL == r.cfg.PublicURL && !st.names(wh.ID) {
			ids = append(ids, wh.ID)
		}
	}
	return ids
}

// removeStrays deletes every webhook for our URL whose secret is unknown, so
// that its deliveries could never be verified. Each is checked against the
// state as stored right before its delete, not as loaded at the start of
// the reconcile: a rotation that lands meanwhile names a webhook that must
// live.
func (r *Registrar) removeStrays(ctx context.Context) (int, error) {
	st, _, err := r.store.Load(ctx)
	if err != nil {
		return 0, err
	}
	all, err := r.api.List(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, id := range r.strays(all, st) {
		now, _, err := r.store.Load(ctx)
		if err != nil {
			return removed, err
		}
		// A rotation or a registration (both claim the state before they
		// create) moved on: not ours to judge.
		if now.names(id) || now.Pending != nil {
			continue
		}
		if err := r.deleteWebhook(ctx, id); err != nil {
			return removed, err
		}
		r.log.Warn("deleted a webhook for our URL whose secret is unknown", zap.String("webhook_id", id))
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
	// Claim first, keeping the secrets: running relays then neither judge
	// the new webhook a stray nor register one of their own meanwhile.
	claim := st
	claim.Pending = &Claim{By: r.cfg.Instance + " (relay rotate)", At: r.now()}
	if rev, err = r.store.Put(ctx, claim, rev); err != nil {
		return State{}, fmt.Errorf("claim the registration for the rotation: %w", err)
	}
	wh, err := r.api.Create(ctx, r.cfg.PublicURL, r.cfg.Events)
	if err != nil {
		if wh.ID != "" {
			_ = r.deleteWebhook(context.WithoutCancel(ctx), wh.ID)
		}
		claim.Pending = nil
		_, _ = r.store.Put(context.WithoutCancel(ctx), claim, rev)
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
// ones first, then replaces the stored state with the uninstall marker,
// which holds no secret and tells running relays to stop registering. It
// returns the ids deleted.
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
	ids = append(ids, r.strays(all, st)...)
	for _, id := range ids {
		if err := r.deleteWebhook(ctx, id); err != nil {
			return nil, err
		}
	}
	marker := State{Deregistered: &Claim{By: r.cfg.Instance, At: r.now()}, UpdatedAt: r.now()}
	if _, err := r.store.Put(ctx, marker, rev); err != nil {
		return ids, fmt.Errorf("store the deregistration marker: %w", err)
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
	if strays := r.strays(all, st); len(strays) > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d other webhook(s) for our URL with unknown secrets: %v", len(strays), strays))
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
