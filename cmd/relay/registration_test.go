package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/natstest"
	"github.com/datagrid-relay/relay/internal/relaytest"
)

// runCommand runs one relay command as main would and returns its exit code
// and everything it printed.
func runCommand(env map[string]string, args ...string) (int, string) {
	var out bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &out)
	return exitCode(err, &out), out.String()
}

// TestRegistrationCommands drives status, trigger, rotate and deregister
// against a running relay, a real NATS server and the fake Datagrid API.
func TestRegistrationCommands(t *testing.T) {
	const key = "dg_cli_key_31337"
	ns := natstest.Start(t, nil)
	api, err := datagridtest.Start(datagridtest.Options{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	env := map[string]string{
		"DATAGRID_API_KEY":  key,
		"DATAGRID_BASE_URL": api.URL(),
		"RELAY_PUBLIC_URL":  "https://relay.example.com/webhooks/datagrid",
		"NATS_URL":          ns.ClientURL(),
	}
	r := startRun(t, env)
	defer func() { _ = r.stop(t) }()

	var printed strings.Builder
	expect := func(wantCode int, wantText string, args ...string) {
		t.Helper()
		code, out := runCommand(env, args...)
		printed.WriteString(out)
		if code != wantCode || !strings.Contains(out, wantText) {
			t.Fatalf("relay %s: got exit %d and\n%s\nwant exit %d and %q", strings.Join(args, " "), code, out, wantCode, wantText)
		}
	}
	expect(0, "registration: healthy", "status")
	expect(0, ": 200 {\"status\":\"stored\"}", "trigger", "batch_prediction.completed")
	expect(0, ": 200 {\"status\":\"stored\"}", "trigger", "knowledge.processing.completed", "--id", "evt_twice")
	expect(0, ": 200 {\"status\":\"duplicate\"}", "trigger", "--id", "evt_twice", "knowledge.processing.completed")
	expect(0, "rotated: new webhook", "rotate")
	expect(1, "a rotation is still in its grace period", "rotate")
	expect(0, "previous webhook", "status")
	expect(0, ": 200", "trigger", "batch_prediction.failed")
	expect(1, ": 401", "trigger", "batch_prediction.failed", "--secret", "whsec_wrong")
	expect(2, "exactly one EVENT_TYPE", "trigger")
	expect(2, "is not [a-z0-9_] parts", "trigger", "Batch.*")
	expect(0, "deregistered: deleted 2 webhook(s)", "deregister")
	expect(1, "registration: NOT healthy", "status")
	relaytest.WaitStatus(t, 10*time.Second, r.admin+"/readyz", 503)
	metrics, err := relaytest.Get(r.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}

	secrets := []string{key}
	for _, wh := range api.Webhooks() {
		secrets = append(secrets, api.Secret(wh.ID))
	}
	for _, s := range append(secrets, "whsec_") {
		if strings.Contains(printed.String()+r.stderr.String()+metrics.Body, s) {
			t.Errorf("a command or the relay printed a secret (%.10s…)", s)
		}
	}
}

func TestStaticModeCommands(t *testing.T) {
	ns := natstest.Start(t, nil)
	env := map[string]string{"RELAY_WEBHOOK_SECRET": "whsec_static_cli", "NATS_URL": ns.ClientURL()}
	r := startRun(t, env)
	defer func() { _ = r.stop(t) }()

	code, out := runCommand(env, "status")
	if code != 0 || !strings.Contains(out, "static secret(s)") {
		t.Fatalf("status: got %d %q", code, out)
	}
	code, out = runCommand(env, "trigger", "batch_prediction.expired")
	if code != 0 || !strings.Contains(out, "200") {
		t.Fatalf("trigger: got %d %q", code, out)
	}
	code, out = runCommand(map[string]string{}, "trigger", "batch_prediction.expired", "--url", r.delivery, "--secret", "whsec_static_cli")
	if code != 0 || !strings.Contains(out, "200") {
		t.Fatalf("trigger with --url and --secret and no environment: got %d %q", code, out)
	}
	code, out = runCommand(env, "rotate")
	if code != 1 || !strings.Contains(out, "managed by hand") {
		t.Fatalf("rotate: got %d %q", code, out)
	}
}
