package config

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid"
)

// static is the smallest valid environment: a hand-managed secret.
func static(kv ...string) func(string) string {
	m := map[string]string{"RELAY_WEBHOOK_SECRET": "whsec_static"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	cfg, err := Load(static())
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"BaseURL", cfg.BaseURL, "https://api.datagrid.com/v1"},
		{"ListenAddr", cfg.ListenAddr, ":8080"},
		{"AdminAddr", cfg.AdminAddr, ":9090"},
		{"NATSURL", strings.Join(cfg.NATSURL, ","), "nats://127.0.0.1:4222"},
		{"SubjectPrefix", cfg.SubjectPrefix, "datagrid"},
		{"PublishMode", cfg.PublishMode, "jetstream"},
		{"Stream", cfg.Stream, "DATAGRID"},
		{"StateBucket", cfg.StateBucket, "datagrid_relay"},
		{"Tolerance", cfg.Tolerance, 5 * time.Minute},
		{"MaxBodyBytes", cfg.MaxBodyBytes, int64(1048576)},
		{"ReconcileInterval", cfg.ReconcileInterval, 5 * time.Minute},
		{"RotationGrace", cfg.RotationGrace, 10 * time.Minute},
		{"LogLevel", cfg.LogLevel, "info"},
		{"LogFormat", cfg.LogFormat, "json"},
		{"Events", strings.Join(cfg.Events, ","), "knowledge.processing.completed,batch_prediction.completed,batch_prediction.failed,batch_prediction.expired,batch_prediction.cancelled"},
		{"DeliveryPath", cfg.DeliveryPath(), "/webhooks/datagrid"},
		{"Registering", cfg.Registering(), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDeliveryPath(t *testing.T) {
	for url, want := range map[string]string{
		"https://relay.example.com/webhooks/datagrid": "/webhooks/datagrid",
		"https://relay.example.com/hooks/dg":          "/hooks/dg",
		"https://relay.example.com":                   "/",
		"https://relay.example.com/":                  "/",
	} {
		cfg, err := Load(static("RELAY_PUBLIC_URL", url))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.DeliveryPath(); got != want {
			t.Errorf("%s: got %s, want %s", url, got, want)
		}
	}
}

func TestSecretsAndListsSplitOnCommas(t *testing.T) {
	cfg, err := Load(static("RELAY_WEBHOOK_SECRET", "whsec_a,whsec_b", "NATS_URL", "nats://a:4222,nats://b:4222", "RELAY_EVENTS", "batch_prediction.failed"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.WebhookSecrets, []string{"whsec_a", "whsec_b"}) || len(cfg.NATSURL) != 2 || !slices.Equal(cfg.Events, []string{"batch_prediction.failed"}) {
		t.Fatalf("got %v %v %v", cfg.WebhookSecrets, cfg.NATSURL, cfg.Events)
	}
}

func TestRegistrationNeedsKeyAndURL(t *testing.T) {
	env := map[string]string{}
	_, err := Load(func(k string) string { return env[k] })
	want := []string{
		`DATAGRID_API_KEY="": required unless RELAY_WEBHOOK_SECRET is set`,
		`RELAY_PUBLIC_URL="": required unless RELAY_WEBHOOK_SECRET is set`,
	}
	assertProblems(t, err, want)

	env["DATAGRID_API_KEY"] = "dg_key"
	env["RELAY_PUBLIC_URL"] = "https://relay.example.com/webhooks/datagrid"
	cfg, err := Load(func(k string) string { return env[k] })
	if err != nil || !cfg.Registering() {
		t.Fatalf("got %v, registering %v; want a registering config", err, cfg.Registering())
	}
}

func TestLoadBadValues(t *testing.T) {
	tests := []struct {
		key, value, want string
	}{
		{"RELAY_SIGNATURE_TOLERANCE", "five", `RELAY_SIGNATURE_TOLERANCE="five": want a duration such as 30s, 5m or 1h`},
		{"RELAY_SIGNATURE_TOLERANCE", "-1m", `RELAY_SIGNATURE_TOLERANCE="-1m": want a positive duration such as 30s, 5m or 1h`},
		{"RELAY_MAX_BODY_BYTES", "1MB", `RELAY_MAX_BODY_BYTES="1MB": want a whole number`},
		{"RELAY_MAX_BODY_BYTES", "100", `RELAY_MAX_BODY_BYTES="100": want a whole number of bytes from 1024 to 67108864`},
		{"RELAY_MAX_BODY_BYTES", "9223372036854775807", `RELAY_MAX_BODY_BYTES="9223372036854775807": want a whole number of bytes from 1024 to 67108864`},
		{"RELAY_MAX_INFLIGHT_BYTES", "2048", `RELAY_MAX_INFLIGHT_BYTES="2048": want a whole number of bytes, at least RELAY_MAX_BODY_BYTES`},
		{"RELAY_SIGNATURE_TOLERANCE", "500ms", `RELAY_SIGNATURE_TOLERANCE="500ms": want 1s or more: signatures carry whole seconds`},
		{"RELAY_DEDUPE_WINDOW", "1m", `RELAY_DEDUPE_WINDOW="1m": must be at least RELAY_SIGNATURE_TOLERANCE, or a replay inside the tolerance is stored twice`},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/a{", pathProblem("https://relay.example.com/a{")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/a%7B", pathProblem("https://relay.example.com/a%7B")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/a b", pathProblem("https://relay.example.com/a b")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/hooks/{id}", pathProblem("https://relay.example.com/hooks/{id}")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/hooks/", pathProblem("https://relay.example.com/hooks/")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com//hooks", pathProblem("https://relay.example.com//hooks")},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/a/../b", pathProblem("https://relay.example.com/a/../b")},
		{"RELAY_PUBLIC_URL", "https://user:pw@relay.example.com/hooks", `RELAY_PUBLIC_URL="https://user:pw@relay.example.com/hooks": want an absolute https URL without user info, query or fragment, such as https://relay.example.com/webhooks/datagrid`},
		{"DATAGRID_BASE_URL", "https://user:pw@api.datagrid.com/v1", `DATAGRID_BASE_URL="https://user:pw@api.datagrid.com/v1": want an absolute http(s) URL without user info, query or fragment`},
		{"RELAY_PUBLISH_MODE", "kafka", `RELAY_PUBLISH_MODE="kafka": want jetstream or core`},
		{"RELAY_STREAM_REPLICAS", "2", `RELAY_STREAM_REPLICAS="2": want 1, 3 or 5`},
		{"RELAY_STREAM_REPLICAS", "three", `RELAY_STREAM_REPLICAS="three": want a whole number`},
		{"RELAY_STREAM", "DATA GRID", `RELAY_STREAM="DATA GRID": want letters, digits, - and _ only`},
		{"RELAY_STATE_BUCKET", "a.b", `RELAY_STATE_BUCKET="a.b": want letters, digits, - and _ only`},
		{"RELAY_SUBJECT_PREFIX", "Datagrid.>", `RELAY_SUBJECT_PREFIX="Datagrid.>": want [a-z0-9_] parts joined by dots, such as datagrid`},
		{"RELAY_EVENTS", "batch_prediction.*", `RELAY_EVENTS="batch_prediction.*": want comma-separated event types made of [a-z0-9_] parts joined by dots, such as batch_prediction.completed`},
		{"RELAY_LISTEN_ADDR", "8080", `RELAY_LISTEN_ADDR="8080": want host:port or :port, such as :8080`},
		{"RELAY_ADMIN_ADDR", "localhost:http", `RELAY_ADMIN_ADDR="localhost:http": want host:port or :port, such as :8080`},
		{"RELAY_PUBLIC_URL", "http://relay.example.com/hook", `RELAY_PUBLIC_URL="http://relay.example.com/hook": want an absolute https URL without user info, query or fragment, such as https://relay.example.com/webhooks/datagrid`},
		{"RELAY_PUBLIC_URL", "https://relay.example.com/hook?x=1", `RELAY_PUBLIC_URL="https://relay.example.com/hook?x=1": want an absolute https URL without user info, query or fragment, such as https://relay.example.com/webhooks/datagrid`},
		{"DATAGRID_BASE_URL", "api.datagrid.com", `DATAGRID_BASE_URL="api.datagrid.com": want an absolute http(s) URL without user info, query or fragment`},
		{"NATS_URL", "://nowhere", `NATS_URL="://nowhere": want comma-separated URLs such as nats://127.0.0.1:4222`},
		{"NATS_TLS_CERT", "/tls/cert.pem", `NATS_TLS_CERT="/tls/cert.pem": NATS_TLS_CERT and NATS_TLS_KEY go together`},
		{"NATS_USER", "relay", `NATS_USER="relay": NATS_USER and NATS_PASSWORD go together`},
		{"RELAY_DEDUPE_WINDOW", "200h", `RELAY_DEDUPE_WINDOW="200h": must not exceed RELAY_STREAM_MAX_AGE`},
		{"RELAY_STREAM_MAX_AGE", "-1h", `RELAY_STREAM_MAX_AGE="-1h": want a duration of 0 (keep forever) or more`},
		{"RELAY_DEREGISTER_ON_SHUTDOWN", "yes", `RELAY_DEREGISTER_ON_SHUTDOWN="yes": want true or false`},
		{"LOG_LEVEL", "verbose", `LOG_LEVEL="verbose": want debug, info, warn or error`},
		{"LOG_FORMAT", "xml", `LOG_FORMAT="xml": want json or console`},
		{"RELAY_RECONCILE_INTERVAL", "0s", `RELAY_RECONCILE_INTERVAL="0s": want a positive duration such as 30s, 5m or 1h`},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			_, err := Load(static(tt.key, tt.value))
			assertProblems(t, err, []string{tt.want})
		})
	}
}

func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Load(static("RELAY_SIGNATURE_TOLERANCE", "x", "LOG_FORMAT", "xml", "RELAY_PUBLISH_MODE", "kafka"))
	assertProblems(t, err, []string{
		`RELAY_SIGNATURE_TOLERANCE="x": want a duration such as 30s, 5m or 1h`,
		`RELAY_PUBLISH_MODE="kafka": want jetstream or core`,
		`LOG_FORMAT="xml": want json or console`,
	})
}

func TestSecretValuesAreNeverShown(t *testing.T) {
	_, err := Load(static("RELAY_WEBHOOK_SECRET", "whsec_hunter2,", "NATS_PASSWORD", "p4ssw0rd-hunter2", "NATS_TOKEN", "tok-hunter2"))
	if err == nil {
		t.Fatal("got no error, want problems")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error shows a secret: %v", err)
	}
	assertProblems(t, err, []string{
		`RELAY_WEBHOOK_SECRET=(hidden): want comma-separated non-empty secrets (spaces around them are ignored)`,
		`NATS_CREDS="": set at most one of NATS_CREDS, NATS_NKEY_SEED_FILE, NATS_USER/NATS_PASSWORD and NATS_TOKEN`,
		`NATS_USER="": NATS_USER and NATS_PASSWORD go together`,
	})
}

func TestVarsDocumentEveryField(t *testing.T) {
	for _, v := range Vars() {
		if v.Name == "" || v.Help == "" {
			t.Errorf("variable %+v has no name or help", v)
		}
	}
}

func assertProblems(t *testing.T, err error, want []string) {
	t.Helper()
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("got %v, want a *config.Error", err)
	}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(cfgErr.Problems))
	if !slices.Equal(got, want) {
		t.Fatalf("got problems\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func pathProblem(url string) string {
	return "RELAY_PUBLIC_URL=" + strconv.Quote(url) + ": want a clean path of letters, digits and - . _ ~ / only (no escapes, spaces, braces, // or trailing /), such as /webhooks/datagrid"
}

func TestSecretsAreTrimmed(t *testing.T) {
	cfg, err := Load(static("RELAY_WEBHOOK_SECRET", "whsec_x, whsec_y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.WebhookSecrets, []string{"whsec_x", "whsec_y"}) {
		t.Fatalf("got %q, want the secrets without the spaces and the newline", cfg.WebhookSecrets)
	}
	_, err = Load(static("RELAY_WEBHOOK_SECRET", "whsec_x, "))
	assertProblems(t, err, []string{`RELAY_WEBHOOK_SECRET=(hidden): want comma-separated non-empty secrets (spaces around them are ignored)`})
}

func TestAPIKeyWithALineBreakIsAConfigurationError(t *testing.T) {
	_, err := Load(func(k string) string {
		return map[string]string{"DATAGRID_API_KEY": "dg_key\ninjected: x", "RELAY_PUBLIC_URL": "https://relay.example.com/h"}[k]
	})
	assertProblems(t, err, []string{`DATAGRID_API_KEY=(hidden): contains characters not allowed in an HTTP header (a line break or space?)`})
}

// TestDefaultBaseURLIsTheClients: the default lives in a struct tag (env/v11
// needs a literal there) and in the client; they must not drift apart.
func TestDefaultBaseURLIsTheClients(t *testing.T) {
	for _, v := range Vars() {
		if v.Name == "DATAGRID_BASE_URL" && v.Default != datagrid.DefaultBaseURL {
			t.Fatalf("DATAGRID_BASE_URL defaults to %s, the client to %s", v.Default, datagrid.DefaultBaseURL)
		}
	}
}
