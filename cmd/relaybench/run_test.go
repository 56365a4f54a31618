package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/datagrid-relay/relay/internal/bench"
)

func TestBadUsageExits2(t *testing.T) {
	for _, args := range [][]string{
		{"-scenarios", "c99-1KiB"},
		{"-targets", "relay,nginx"},
		{"-no-such-flag"},
		{"extra-argument"},
		{"serve-baseline"}, // no -nats, no secret
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(context.Background(), args, io.Discard, &stderr); got != 2 {
				t.Fatalf("got exit %d, want 2; stderr: %s", got, stderr.String())
			}
		})
	}
}

// TestServeBareAnnouncesAndStops runs the subcommand the benchmark starts
// as a child: it prints its address, answers 204 and stops with ctx.
func TestServeBareAnnouncesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve-bare"}, pw, io.Discard); pw.Close() }()

	line := make(chan string, 1)
	go func() {
		b := make([]byte, 128)
		n, _ := pr.Read(b)
		line <- string(b[:n])
		_, _ = io.Copy(io.Discard, pr)
	}()
	var addr string
	select {
	case l := <-line:
		addr = strings.TrimSpace(strings.TrimPrefix(l, bench.ListeningPrefix))
	case <-time.After(10 * time.Second):
		t.Fatal("serve-bare announced no address within 10s")
	}
	resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("got status %d, want 204", resp.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("got exit %d, want 0", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve-bare did not stop within 15s of its context ending")
	}
}
