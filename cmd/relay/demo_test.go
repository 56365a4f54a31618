package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/datagrid-relay/relay/internal/relaytest"
)

// TestDemoRelaysFiveEvents runs `relay demo --events 5` as a user would.
func TestDemoRelaysFiveEvents(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	defer goleak.VerifyNone(t)

	var stdout, stderr relaytest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, []string{"demo", "--events", "5", "--rate", "20"}, func(string) string { return "" }, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 {
		t.Fatalf("relay demo --events 5: got exit %d, want 0\n%s", code, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatal("the demo did not stop by itself after 5 events")
	}
	out := stdout.String()

	var events []string
	types := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(f[1], "datagrid.") {
			events = append(events, f[2])
			types[f[1]] = true
		}
	}
	if len(events) != 5 {
		t.Errorf("event lines: got %d %v, want 5", len(events), events)
	}
	if len(types) < 3 {
		t.Errorf("event types: got %v, want at least 3", types)
	}
	if !strings.Contains(out, "duplicate suppressed") {
		t.Error("no suppressed duplicate was shown")
	}
	for _, want := range []string{"sub 'datagrid.>' --server nats://127.0.0.1:", "/metrics", "trigger batch_prediction.completed --url http://127.0.0.1:", "5 events relayed, stopping"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out+stderr.String(), "whsec_") || strings.Contains(stderr.String(), "WARN") {
		t.Errorf("secrets or warnings printed:\n%s", stderr.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}
