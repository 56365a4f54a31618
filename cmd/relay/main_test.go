package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
	"github.com/datagrid-relay/relay/internal/signature"
)

// running is the relay started through run, as main starts it.
type running struct {
	delivery, admin string
	stdout, stderr  *relaytest.Buffer
	cancel          context.CancelFunc
	done            chan error
}

// startRun starts run("serve") with env, both listeners on port 0, and
// waits until /readyz answers 200. It learns where the relay listens from
// its "relay started" log line, so no port is chosen before it is bound,
// and sets RELAY_LISTEN_ADDR and RELAY_ADMIN_ADDR in env to the addresses
// in use, for the commands a test runs next (relay trigger reads them).
func startRun(t *testing.T, env map[string]string) *running {
	t.Helper()
	own := maps.Clone(env)
	own["RELAY_LISTEN_ADDR"], own["RELAY_ADMIN_ADDR"] = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: &relaytest.Buffer{}, stderr: &relaytest.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- run(ctx, []string{"serve"}, func(k string) string { return own[k] }, r.stdout, r.stderr)
	}()
	exited := func() {
		select {
		case err := <-r.done:
			t.Fatalf("run returned early: %v\n%s", err, r.stderr)
		default:
		}
	}
	relaytest.WaitFor(t, 15*time.Second, `the "relay started" log line`, func() bool {
		exited()
		started, ok := startedLine(r.stderr.String())
		if ok {
			r.delivery = "http://" + started.PublicAddr + started.DeliveryPath
			r.admin = "http://" + started.AdminAddr
			env["RELAY_LISTEN_ADDR"], env["RELAY_ADMIN_ADDR"] = started.PublicAddr, started.AdminAddr
		}
		return ok
	})
	relaytest.WaitFor(t, 15*time.Second, "/readyz to answer 200", func() bool {
		exited()
		resp, err := relaytest.Get(r.admin + "/readyz")
		return err == nil && resp.Status == 200
	})
	return r
}

// started is what the "relay started" log line says about the listeners.
type started struct {
	PublicAddr   string `json:"public_addr"`
	DeliveryPath string `json:"delivery_path"`
	AdminAddr    string `json:"admin_addr"`
}

// startedLine finds and reads the "relay started" line in JSON logs.
func startedLine(logs string) (started, bool) {
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			Msg string `json:"msg"`
			started
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "relay started" && l.PublicAddr != "" && l.AdminAddr != "" {
			return l.started, true
		}
	}
	return started{}, false
}

// stop cancels as SIGTERM does and returns run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of cancellation")
		return nil
	}
}

func TestRunEndToEnd(t *testing.T) {
	ns := natstest.Start(t, nil)
	leaks := goleak.IgnoreCurrent() // the NATS server's own goroutines
	r := startRun(t, map[string]string{
		"RELAY_WEBHOOK_SECRET": "whsec_e2e",
		"NATS_URL":             ns.ClientURL(),
	})
	resp, err := relaytest.Post(r.delivery, "whsec_e2e", relaytest.Envelope("evt_e2e", "knowledge.processing.completed"))
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, "stored") {
		t.Fatalf("delivery: got %d %q %v, want 200 stored", resp.Status, resp.Body, err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("run: got %v, want nil after cancellation", err)
	}
	if code := exitCode(err, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit code: got %d, want 0", code)
	}
	for _, want := range []string{`"msg":"relay started"`, `"msg":"shutting down"`, `"msg":"relay stopped"`} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
	// The server's stream goroutines are not the relay's: stop it first.
	ns.Shutdown()
	ns.WaitForShutdown()
	goleak.VerifyNone(t, leaks)
}

func TestBadConfigurationExitsTwo(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad duration", map[string]string{"RELAY_WEBHOOK_SECRET": "s", "RELAY_SIGNATURE_TOLERANCE": "soon"},
			"relay: configuration: RELAY_SIGNATURE_TOLERANCE=\"soon\": want a duration such as 30s, 5m or 1h\n"},
		{"nothing to verify with", map[string]string{},
			"relay: configuration: DATAGRID_API_KEY=\"\": required unless RELAY_WEBHOOK_SECRET is set\n" +
				"relay: configuration: RELAY_PUBLIC_URL=\"\": required unless RELAY_WEBHOOK_SECRET is set\n"},
		{"bad mode", map[string]string{"RELAY_WEBHOOK_SECRET": "s", "RELAY_PUBLISH_MODE": "kafka"},
			"relay: configuration: RELAY_PUBLISH_MODE=\"kafka\": want jetstream or core\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), nil, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != 2 {
				t.Fatalf("exit code: got %d, want 2", code)
			}
			if stderr.String() != tt.want {
				t.Fatalf("stderr: got %q, want %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout: got %q, want nothing", stdout.String())
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains []string
	}{
		{[]string{"--help"}, 0, []string{"Commands:", "serve", "version", "RELAY_WEBHOOK_SECRET", "NATS_URL (default: nats://127.0.0.1:4222)"}},
		{[]string{"help"}, 0, []string{"Commands:"}},
		{[]string{"serve", "--help"}, 0, []string{"Usage: relay serve", "RELAY_SIGNATURE_TOLERANCE (default: 5m)", "LOG_FORMAT (default: json)"}},
		{[]string{"version"}, 0, []string{"relay dev (commit unknown, go1."}},
		{[]string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{[]string{"serve", "--bogus"}, 2, []string{"flag provided but not defined: -bogus"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out relaytest.Buffer
			err := run(context.Background(), tt.args, func(string) string { return "" }, &out, &out)
			if code := exitCode(err, &out); code != tt.code {
				t.Fatalf("exit code: got %d, want %d (%s)", code, tt.code, out.String())
			}
			for _, want := range tt.contains {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestNoSecretLeaks runs the relay with every kind of secret set, sends it
// every kind of refused delivery and a good one, and then looks for the
// secrets, and for any signature computed with them, in everything the relay
// said: log lines, answers, metrics and the error of a bad start.
func TestNoSecretLeaks(t *testing.T) {
	const (
		webhookSecret = "whsec_leak_canary_4f1d"
		apiKey        = "dg_apikey_leak_canary_77"
		natsPassword  = "nats_pw_leak_canary_93"
	)
	opts := natstest.Options(t.TempDir())
	opts.Users = []*server.User{{Username: "relay", Password: natsPassword}}
	ns := natstest.Start(t, opts)

	r := startRun(t, map[string]string{
		"RELAY_WEBHOOK_SECRET": "whsec_other_secret," + webhookSecret,
		"DATAGRID_API_KEY":     apiKey,
		"NATS_URL":             ns.ClientURL(),
		"NATS_USER":            "relay",
		"NATS_PASSWORD":        natsPassword,
		"LOG_LEVEL":            "debug",
		"RELAY_MAX_BODY_BYTES": "2048",
	})
	now := time.Now().Unix()
	good := relaytest.Envelope("evt_leak", "batch_prediction.completed")
	sig := func(body []byte, t int64) string { return signature.Sign([]byte(webhookSecret), t, body) }
	var answers []string
	send := func(method string, body []byte, signature string) {
		resp, err := relaytest.Send(method, r.delivery, signature, body)
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, fmt.Sprint(resp.Header)+resp.Body)
	}
	send(http.MethodPost, good, sig(good, now))                                     // 200
	send(http.MethodPost, good, sig(good, now))                                     // 200 duplicate
	send(http.MethodPost, good, "")                                                 // 401 missing
	send(http.MethodPost, good, "t=x")                                              // 401 unparsable
	send(http.MethodPost, good, sig(append(good, ' '), now))                        // 401 wrong
	send(http.MethodPost, good, signature.Sign([]byte("whsec_unknown"), now, good)) // 401 unknown secret
	send(http.MethodPost, good, sig(good, now-3600))                                // 401 stale
	send(http.MethodPost, bytes.Repeat([]byte("x"), 4096), sig(good, now))          // 413
	send(http.MethodPost, []byte(`{"id":1}`), sig([]byte(`{"id":1}`), now))         // 400
	send(http.MethodGet, nil, "")                                                   // 405
	notStored := relaytest.Envelope("evt_leak_2", "batch_prediction.failed")
	ns.Shutdown()
	ns.WaitForShutdown()
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	send(http.MethodPost, notStored, sig(notStored, now)) // 503
	metrics, _ := relaytest.Get(r.admin + "/metrics")
	ready, _ := relaytest.Get(r.admin + "/readyz")
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// A start that fails, with the same secrets in the environment.
	var badStart relaytest.Buffer
	err := run(context.Background(), nil, func(k string) string {
		return map[string]string{"RELAY_WEBHOOK_SECRET": webhookSecret + ",", "NATS_PASSWORD": natsPassword, "DATAGRID_API_KEY": apiKey, "NATS_TOKEN": "tok"}[k]
	}, &badStart, &badStart)
	exitCode(err, &badStart)

	everything := map[string]string{
		"logs": r.stderr.String() + r.stdout.String(), "answers": strings.Join(answers, "\n"),
		"metrics": metrics.Body, "readyz": ready.Body, "failed start": badStart.String(),
	}
	canaries := []string{webhookSecret, apiKey, natsPassword, "leak_canary",
		sig(good, now)[len("t=0000000000,v1="):], sig(append(good, ' '), now)[len("t=0000000000,v1="):]}
	for where, text := range everything {
		if text == "" {
			t.Errorf("%s: nothing captured", where)
		}
		for _, c := range canaries {
			if strings.Contains(text, c) {
				t.Errorf("%s contain a secret or a signature (%.12s…)", where, c)
			}
		}
	}
	if !strings.Contains(everything["logs"], `"msg":"delivery refused"`) {
		t.Error("the run exercised no refusal")
	}
}
