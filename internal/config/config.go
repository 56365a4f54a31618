// Package config reads the relay's configuration from the environment.
//
// Every variable is one field of Config, parsed by github.com/caarlos0/env/v11
// from an injected environment, so tests and `relay --help` see exactly what
// the process sees. Load reports every problem at once, one line per
// variable, naming the variable, the value and what is allowed.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/event"
)

// DefaultPath is where deliveries are served when RELAY_PUBLIC_URL is unset.
const DefaultPath = "/webhooks/datagrid"

// Publish modes (RELAY_PUBLISH_MODE).
const (
	ModeJetStream = "jetstream" // acknowledged and deduplicated: 2xx means stored
	ModeCore      = "core"      // core NATS: 2xx means the server received it
)

// MaxBodyBytesLimit is the largest RELAY_MAX_BODY_BYTES: NATS never accepts
// a payload over 64 MiB.
const MaxBodyBytesLimit = 64 << 20

// Config is the whole configuration of the relay. The struct tags are the
// single source for parsing, defaults and `relay serve --help`:
// env and envDefault drive env/v11, help is the one-line explanation and
// secret marks values that must never be printed.
type Config struct {
	APIKey  string `env:"DATAGRID_API_KEY" secret:"true" help:"Datagrid API key (required when the relay registers its own webhook)"`
	BaseURL string `env:"DATAGRID_BASE_URL" envDefault:"https://api.datagrid.com/v1" help:"Datagrid API base URL"`

	PublicURL       string        `env:"RELAY_PUBLIC_URL" help:"HTTPS URL Datagrid calls; deliveries are served on its path (default path /webhooks/datagrid)"`
	Events          []string      `env:"RELAY_EVENTS" envDefault:"knowledge.processing.completed,batch_prediction.completed,batch_prediction.failed,batch_prediction.expired,batch_prediction.cancelled" help:"comma-separated event types to subscribe to"`
	WebhookSecrets  []string      `env:"RELAY_WEBHOOK_SECRET" secret:"true" help:"comma-separated signing secret(s) of a webhook managed by hand; when set the relay registers nothing"`
	ListenAddr      string        `env:"RELAY_LISTEN_ADDR" envDefault:":8080" help:"public listener: the delivery path only"`
	AdminAddr       string        `env:"RELAY_ADMIN_ADDR" envDefault:":9090" help:"private listener: /metrics, /healthz, /readyz"`
	Tolerance       time.Duration `env:"RELAY_SIGNATURE_TOLERANCE" envDefault:"5m" help:"largest accepted |now - t| of a signature (1s or more)"`
	MaxBodyBytes    int64         `env:"RELAY_MAX_BODY_BYTES" envDefault:"1048576" help:"largest accepted delivery body (1024 to 67108864); never above the NATS server's max_payload or the stream's max_msg_size, less header room"`
	MaxInflight     int64         `env:"RELAY_MAX_INFLIGHT_BYTES" envDefault:"33554432" help:"memory budget for delivery bodies held at once; past it deliveries get 503 with Retry-After (at least RELAY_MAX_BODY_BYTES)"`
	ReadTimeout     time.Duration `env:"RELAY_READ_TIMEOUT" envDefault:"10s" help:"time allowed to read one delivery, headers and body"`
	PublishTimeout  time.Duration `env:"RELAY_PUBLISH_TIMEOUT" envDefault:"5s" help:"time allowed for NATS to confirm a message before the delivery is answered 503"`
	ShutdownTimeout time.Duration `env:"RELAY_SHUTDOWN_TIMEOUT" envDefault:"20s" help:"time allowed on SIGTERM to finish in-flight deliveries and drain NATS"`

	ReconcileInterval    time.Duration `env:"RELAY_RECONCILE_INTERVAL" envDefault:"5m" help:"how often the registration is checked and repaired"`
	RotationGrace        time.Duration `env:"RELAY_ROTATION_GRACE" envDefault:"10m" help:"how long the previous secret stays valid after relay rotate"`
	DeregisterOnShutdown bool          `env:"RELAY_DEREGISTER_ON_SHUTDOWN" envDefault:"false" help:"delete the webhook at Datagrid when the relay stops (never needed for restarts or rolling updates)"`

	NATSURL           []string      `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" help:"comma-separated NATS server URLs"`
	NATSCreds         string        `env:"NATS_CREDS" help:"NATS credentials file (JWT and seed)"`
	NATSNKeySeedFile  string        `env:"NATS_NKEY_SEED_FILE" help:"NATS NKey seed file"`
	NATSUser          string        `env:"NATS_USER" help:"NATS user name"`
	NATSPassword      string        `env:"NATS_PASSWORD" secret:"true" help:"NATS password"`
	NATSToken         string        `env:"NATS_TOKEN" secret:"true" help:"NATS token"`
	NATSTLSCA         string        `env:"NATS_TLS_CA" help:"CA file to verify the NATS servers"`
	NATSTLSCert       string        `env:"NATS_TLS_CERT" help:"client certificate file for NATS mutual TLS"`
	NATSTLSKey        string        `env:"NATS_TLS_KEY" help:"client key file for NATS mutual TLS"`
	NATSReconnectWait time.Duration `env:"NATS_RECONNECT_WAIT" envDefault:"2s" help:"pause between NATS reconnect attempts (the relay reconnects forever)"`

	SubjectPrefix  string        `env:"RELAY_SUBJECT_PREFIX" envDefault:"datagrid" help:"subject = prefix + . + event type"`
	PublishMode    string        `env:"RELAY_PUBLISH_MODE" envDefault:"jetstream" help:"jetstream (acknowledged, deduplicated) or core (NATS core, no storage)"`
	Stream         string        `env:"RELAY_STREAM" envDefault:"DATAGRID" help:"JetStream stream capturing <prefix>.>; created if missing, adopted if present"`
	StreamReplicas int           `env:"RELAY_STREAM_REPLICAS" envDefault:"1" help:"replicas of the stream and the state bucket when the relay creates them (1, 3 or 5)"`
	StreamMaxAge   time.Duration `env:"RELAY_STREAM_MAX_AGE" envDefault:"168h" help:"how long the stream keeps messages when the relay creates it (0 keeps them forever)"`
	DedupeWindow   time.Duration `env:"RELAY_DEDUPE_WINDOW" envDefault:"24h" help:"JetStream duplicate window of a stream the relay creates: a redelivered event id within it is stored once (at least RELAY_SIGNATURE_TOLERANCE)"`
	StateBucket    string        `env:"RELAY_STATE_BUCKET" envDefault:"datagrid_relay" help:"JetStream key-value bucket holding the registration and secret(s)"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json" help:"json or console"`
}

// Error is a configuration that cannot be used. Each problem is one line.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// Var describes one environment variable, for help output.
type Var struct {
	Name    string
	Default string
	Help    string
	Secret  bool
}

// Vars lists every variable the relay reads, in declaration order.
func Vars() []Var {
	t := reflect.TypeFor[Config]()
	vars := make([]Var, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		vars = append(vars, Var{
			Name:    strings.Split(f.Tag.Get("env"), ",")[0],
			Default: f.Tag.Get("envDefault"),
			Help:    f.Tag.Get("help"),
			Secret:  f.Tag.Get("secret") == "true",
		})
	}
	return vars
}

// Load parses the configuration from getenv and validates it. The error, if
// any, is an *Error listing every problem found.
func Load(getenv func(string) string) (Config, error) {
	environ := make(map[string]string)
	fieldVar := make(map[string]Var)
	t := reflect.TypeFor[Config]()
	for i, v := range Vars() {
		if val := getenv(v.Name); val != "" {
			environ[v.Name] = val
		}
		fieldVar[t.Field(i).Name] = v
	}

	var cfg Config
	var problems []string
	unparsed := make(map[string]bool) // reported once, not again by validate
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		var agg env.AggregateError
		if !errors.As(err, &agg) {
			return Config{}, fmt.Errorf("parse environment: %w", err)
		}
		for _, e := range agg.Errors {
			var pe env.ParseError
			if !errors.As(e, &pe) {
				problems = append(problems, e.Error())
				continue
			}
			v := fieldVar[pe.Name]
			unparsed[v.Name] = true
			problems = append(problems, problem(v.Name, shown(v, environ[v.Name]), allowedFor(pe.Type)))
		}
	}
	// Secrets often come from files with a trailing newline, or as "a, b".
	for i, sec := range cfg.WebhookSecrets {
		cfg.WebhookSecrets[i] = strings.TrimSpace(sec)
	}
	cfg.APIKey = strings.TrimSpace(cfg.APIKey)
	problems = append(problems, cfg.validate(environ, unparsed)...)
	if len(problems) > 0 {
		return Config{}, &Error{Problems: problems}
	}
	return cfg, nil
}

func problem(name, value, allowed string) string {
	return fmt.Sprintf("%s=%s: %s", name, value, allowed)
}

// shown is how a value appears in an error: quoted, or hidden for secrets.
func shown(v Var, value string) string {
	if v.Secret && value != "" {
		return "(hidden)"
	}
	return strconv.Quote(value)
}

func allowedFor(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "want a duration such as 30s, 5m or 1h"
	case reflect.TypeFor[bool]():
		return "want true or false"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "want a whole number"
	}
	return "cannot be parsed as " + t.String()
}

// Registering reports whether the relay manages its own webhook at Datagrid,
// that is whether no static secret was configured.
func (c Config) Registering() bool { return len(c.WebhookSecrets) == 0 }

// DeliveryPath is the HTTP path deliveries arrive on: the path of
// RELAY_PUBLIC_URL, or DefaultPath when the URL is unset.
func (c Config) DeliveryPath() string {
	if c.PublicURL == "" {
		return DefaultPath
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || u.Path == "" {
		return "/"
	}
	return u.Path
}

// validate is one flat list of independent checks, in the order of the
// variables: long, but each check reads on its own and splitting it would
// only scatter them.
func (c Config) validate(environ map[string]string, unparsed map[string]bool) []string {
	var p []string
	bad := func(name, allowed string) {
		if unparsed[name] {
			return
		}
		v := Var{Name: name}
		for _, known := range Vars() {
			if known.Name == name {
				v = known
			}
		}
		p = append(p, problem(name, shown(v, environ[name]), allowed))
	}

	if _, err := datagrid.ParseBaseURL(c.BaseURL); err != nil {
		bad("DATAGRID_BASE_URL", "want an absolute http(s) URL without user info, query or fragment")
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
			bad("RELAY_PUBLIC_URL", "want an absolute https URL without user info, query or fragment, such as https://relay.example.com/webhooks/datagrid")
		} else if !validPath(u) {
			bad("RELAY_PUBLIC_URL", "want a clean path of letters, digits and - . _ ~ / only (no escapes, spaces, braces, // or trailing /), such as /webhooks/datagrid")
		}
	}
	if c.Registering() {
		if c.APIKey == "" {
			bad("DATAGRID_API_KEY", "required unless RELAY_WEBHOOK_SECRET is set")
		} else if datagrid.CheckAPIKey(c.APIKey) != nil {
			bad("DATAGRID_API_KEY", "contains characters not allowed in an HTTP header (a line break or space?)")
		}
		if c.PublicURL == "" {
			bad("RELAY_PUBLIC_URL", "required unless RELAY_WEBHOOK_SECRET is set")
		}
	}
	if len(c.Events) == 0 {
		bad("RELAY_EVENTS", "want at least one event type")
	}
	for _, e := range c.Events {
		if !event.ValidType(e) {
			bad("RELAY_EVENTS", "want comma-separated event types made of [a-z0-9_] parts joined by dots, such as "+event.Known()[1])
			break
		}
	}
	for _, s := range c.WebhookSecrets {
		if s == "" {
			bad("RELAY_WEBHOOK_SECRET", "want comma-separated non-empty secrets (spaces around them are ignored)")
			break
		}
	}
	for _, a := range []struct{ name, addr string }{{"RELAY_LISTEN_ADDR", c.ListenAddr}, {"RELAY_ADMIN_ADDR", c.AdminAddr}} {
		if !validAddr(a.addr) {
			bad(a.name, "want host:port or :port, such as :8080")
		}
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"RELAY_SIGNATURE_TOLERANCE", c.Tolerance},
		{"RELAY_READ_TIMEOUT", c.ReadTimeout},
		{"RELAY_PUBLISH_TIMEOUT", c.PublishTimeout},
		{"RELAY_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"RELAY_RECONCILE_INTERVAL", c.ReconcileInterval},
		{"RELAY_ROTATION_GRACE", c.RotationGrace},
		{"NATS_RECONNECT_WAIT", c.NATSReconnectWait},
		{"RELAY_DEDUPE_WINDOW", c.DedupeWindow},
	}
	for _, d := range positive {
		if d.d <= 0 {
			bad(d.name, "want a positive duration such as 30s, 5m or 1h")
		}
	}
	if c.Tolerance > 0 && c.Tolerance < time.Second {
		bad("RELAY_SIGNATURE_TOLERANCE", "want 1s or more: signatures carry whole seconds")
	}
	if c.DedupeWindow > 0 && c.DedupeWindow < c.Tolerance {
		bad("RELAY_DEDUPE_WINDOW", "must be at least RELAY_SIGNATURE_TOLERANCE, or a replay inside the tolerance is stored twice")
	}
	if c.StreamMaxAge < 0 {
		bad("RELAY_STREAM_MAX_AGE", "want a duration of 0 (keep forever) or more")
	}
	if c.StreamMaxAge > 0 && c.DedupeWindow > c.StreamMaxAge {
		bad("RELAY_DEDUPE_WINDOW", "must not exceed RELAY_STREAM_MAX_AGE")
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > MaxBodyBytesLimit {
		bad("RELAY_MAX_BODY_BYTES", fmt.Sprintf("want a whole number of bytes from 1024 to %d", MaxBodyBytesLimit))
	} else if c.MaxInflight < c.MaxBodyBytes {
		bad("RELAY_MAX_INFLIGHT_BYTES", "want a whole number of bytes, at least RELAY_MAX_BODY_BYTES")
	}
	if len(c.NATSURL) == 0 {
		bad("NATS_URL", "want at least one URL such as nats://127.0.0.1:4222")
	}
	for _, s := range c.NATSURL {
		if u, err := url.Parse(strings.TrimSpace(s)); err != nil || u.Host == "" {
			bad("NATS_URL", "want comma-separated URLs such as nats://127.0.0.1:4222")
			break
		}
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		bad("NATS_TLS_CERT", "NATS_TLS_CERT and NATS_TLS_KEY go together")
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		bad("NATS_USER", "NATS_USER and NATS_PASSWORD go together")
	}
	if n := countSet(c.NATSCreds, c.NATSNKeySeedFile, c.NATSUser+c.NATSPassword, c.NATSToken); n > 1 {
		bad("NATS_CREDS", "set at most one of NATS_CREDS, NATS_NKEY_SEED_FILE, NATS_USER/NATS_PASSWORD and NATS_TOKEN")
	}
	if !event.ValidType(c.SubjectPrefix) {
		bad("RELAY_SUBJECT_PREFIX", "want [a-z0-9_] parts joined by dots, such as datagrid")
	}
	if c.PublishMode != ModeJetStream && c.PublishMode != ModeCore {
		bad("RELAY_PUBLISH_MODE", "want jetstream or core")
	}
	if !validName(c.Stream) {
		bad("RELAY_STREAM", "want letters, digits, - and _ only")
	}
	if !slices.Contains([]int{1, 3, 5}, c.StreamReplicas) {
		bad("RELAY_STREAM_REPLICAS", "want 1, 3 or 5")
	}
	if !validName(c.StateBucket) {
		bad("RELAY_STATE_BUCKET", "want letters, digits, - and _ only")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("LOG_LEVEL", "want debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "want json or console")
	}
	return p
}

// validPath accepts a delivery path that is matched exactly, byte for byte:
// absolute, clean, and made only of unreserved characters.
func validPath(u *url.URL) bool {
	p := u.EscapedPath()
	if p == "" {
		return true // the root
	}
	if p != u.Path || p[0] != '/' || (p != "/" && path.Clean(p) != p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !pathChar(p[i]) {
			return false
		}
	}
	return true
}

// pathChar accepts URL-unreserved characters and '/'.
func pathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/", c) >= 0
}

func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

func validAddr(addr string) bool {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return false
	}
	port, err := strconv.Atoi(addr[i+1:])
	return err == nil && port >= 0 && port <= 65535
}

// validName accepts JetStream stream and bucket names.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			return false
		}
	}
	return true
}
