package demo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/relaytest"
)

func TestDemoShowsForgedDeliveriesRefused(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	var stdout, stderr relaytest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Rate: 50, ForgeSignatures: true}, &stdout, &stderr) }()

	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(stdout.String(), "refused by the relay: 401 signature does not match") < 3 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no refusals reported within 30s:\n%s", stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo: got %v, want nil after cancellation", err)
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[1], "datagrid.") {
			t.Fatalf("a forged delivery was relayed: %s", line)
		}
	}
}
