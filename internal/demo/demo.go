// Package demo runs the whole pipeline in one process, with nothing to
// install and no account: an embedded NATS server with JetStream, a
// Datagrid simulator (the faithful fake API plus a sender of signed sample
// deliveries), the real relay through the production code path
// (registration, verification, JetStream publish), and a subscriber that
// prints every event as it lands on NATS.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/datagrid/datagridtest"
	"github.com/datagrid-relay/relay/internal/embedded"
	"github.com/datagrid-relay/relay/internal/logging"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/server"
)

// The demo's fixed identity at the simulator. The public URL is what the
// relay registers; the simulator delivers it to the relay's local
// listener, as an ingress would.
const (
	apiKey    = "dg_demo_key" //nolint:gosec // G101: the simulator's throwaway key, printed on purpose
	publicURL = "https://relay.demo.invalid/webhooks/datagrid"
)

// Options shape a demo run. Addresses default to 127.0.0.1 on a free port.
type Options struct {
	Events int     // stop after this many relayed events; 0 runs until ctx ends
	Rate   float64 // deliveries per second sent by the simulator

	Listen, Admin, NATS, API string // host:port of each listener

	// ForgeSignatures makes the simulator sign with a secret the relay does
	// not know, to see verification refuse every delivery.
	ForgeSignatures bool

	Build metrics.BuildInfo
}

// Run runs the demo until ctx ends or Events events were relayed. It
// prints for people on stdout and the relay's warnings on stderr, and
// leaves nothing behind: the NATS store is a temporary directory removed on
// the way out. It reads top to bottom in numbered steps, like the delivery
// handler, which is why it is long.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) (err error) {
	if o.Rate <= 0 {
		return errors.New("--rate must be above 0")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &printer{w: stdout}

	// 1. NATS with JetStream, loopback only, storing in a temporary dir.
	dir, err := os.MkdirTemp("", "relay-demo-*")
	if err != nil {
		return fmt.Errorf("temporary store: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ns, err := startNATS(o.NATS, dir)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	// 2. The Datagrid simulator's API.
	api := datagridtest.NewServer(datagridtest.Options{APIKey: apiKey})
	apiLn, err := listen(o.API)
	if err != nil {
		return fmt.Errorf("simulator listener: %w", err)
	}
	apiSrv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = apiSrv.Serve(apiLn) }()
	defer func() { _ = apiSrv.Close() }()

	// 3. The relay, configured through its environment like in production.
	listenAddr, adminAddr := orLoopback(o.Listen), orLoopback(o.Admin)
	env := map[string]string{
		"DATAGRID_API_KEY":         apiKey,
		"DATAGRID_BASE_URL":        "http://" + apiLn.Addr().String() + "/v1",
		"RELAY_PUBLIC_URL":         publicURL,
		"NATS_URL":                 ns.ClientURL(),
		"RELAY_LISTEN_ADDR":        listenAddr,
		"RELAY_ADMIN_ADDR":         adminAddr,
		"RELAY_RECONCILE_INTERVAL": "30s",
		"RELAY_SHUTDOWN_TIMEOUT":   "2s",
		"LOG_LEVEL":                "warn",
		"LOG_FORMAT":               "console",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	addrs := make(chan [2]net.Addr, 1)
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- server.Run(ctx, server.Options{
			Config: cfg, Log: log, Registry: prometheus.NewRegistry(), Build: o.Build,
			Listening: func(p, a net.Addr) { addrs <- [2]net.Addr{p, a} },
		})
	}()
	defer func() {
		cancel()
		if rerr := <-relayDone; rerr != nil && err == nil {
			err = rerr
		}
	}()
	var deliveryURL, adminURL string
	select {
	case a := <-addrs:
		deliveryURL = "http://" + a[0].String() + cfg.DeliveryPath()
		adminURL = "http://" + a[1].String()
	case err := <-relayDone:
		relayDone <- err
		return fmt.Errorf("relay: %w", err)
	}
	out.banner(ns.ClientURL(), "http://"+apiLn.Addr().String()+"/v1", deliveryURL, adminURL)

	// 4. The subscriber: a JetStream consumer, so it sees each stored event
	// once, as a durable subscriber would.
	relayed := make(chan struct{}, 1)
	stopSub, err := subscribe(ctx, ns.ClientURL(), out, relayed)
	if err != nil {
		return err
	}
	defer stopSub()

	// 5. The simulator's sender, once the relay has registered.
	sender := &sender{api: api, url: deliveryURL, readyz: adminURL + "/readyz", out: out, interval: time.Duration(float64(time.Second) / o.Rate), forge: o.ForgeSignatures}
	sendCtx, stopSending := context.WithCancel(ctx)
	var senderDone sync.WaitGroup
	senderDone.Go(func() { sender.run(sendCtx) })
	defer cancel() // then stops the relay and the subscriber
	defer senderDone.Wait()
	defer stopSending() // first on the way out: the sender lets its delivery in flight finish

	count := 0
	for {
		select {
		case <-ctx.Done():
			out.line("stopping")
			return nil
		case rerr := <-relayDone:
			relayDone <- rerr
			if rerr != nil {
				return fmt.Errorf("relay: %w", rerr)
			}
			return nil
		case <-relayed:
			count++
			if o.Events > 0 && count >= o.Events {
				out.line(fmt.Sprintf("%d events relayed, stopping", count))
				return nil
			}
		}
	}
}

func startNATS(addr, dir string) (*natsserver.Server, error) {
	host, port := "127.0.0.1", natsserver.RANDOM_PORT
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("--nats %q: want host:port", addr)
		}
		if host = h; host == "" {
			host = "127.0.0.1"
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("--nats %q: want host:port", addr)
		}
	}
	opts := embedded.Options(host, port, dir)
	opts.ServerName = "relay-demo"
	return embedded.Start(opts)
}

func orLoopback(addr string) string {
	if addr == "" {
		return "127.0.0.1:0"
	}
	return addr
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", orLoopback(addr)) }

// subscribe prints every message of the stream as it lands and signals
// relayed for each. The returned func stops it.
func subscribe(ctx context.Context, url string, out *printer, relayed chan<- struct{}) (func(), error) {
	nc, err := nats.Connect(url, nats.Name("relay-demo-subscriber"))
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	var cons jetstream.Consumer
	for {
		// The relay creates the stream; wait for it.
		cons, err = js.OrderedConsumer(ctx, "DATAGRID", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"datagrid.>"}})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return func() {}, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		out.event(m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), m.Data())
		select {
		case relayed <- struct{}{}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	return func() { cc.Stop(); <-cc.Closed(); nc.Close() }, nil
}

// printer writes the demo's lines one at a time.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s  %s\n", time.Now().Format("15:04:05.000"), s)
}

func (p *printer) event(subject, id string, body []byte) {
	p.line(fmt.Sprintf("%-40s %-14s %s", subject, id, summarize(body)))
}

func (p *printer) banner(natsURL, apiURL, deliveryURL, adminURL string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, `relay demo: Datagrid webhooks to NATS, the whole pipeline on this machine. Ctrl-C stops it.

  NATS with JetStream   %s
  Datagrid simulator    %s (registers webhooks like the real API)
  relay deliveries      %s (registered as %s)
  relay admin           %s/metrics  %s/readyz

From another terminal:
  go run github.com/nats-io/natscli/nats@v0.5.0 sub 'datagrid.>' --server %s
  curl -s %s/metrics | grep datagrid_relay_deliveries_total
  NATS_URL=%s DATAGRID_API_KEY=%s RELAY_PUBLIC_URL=%s \
    go run ./cmd/relay trigger batch_prediction.completed --url %s

Events as they land on NATS (time, subject, event id, summary):
`, natsURL, apiURL, deliveryURL, publicURL, adminURL, adminURL, natsURL, adminURL, natsURL, apiKey, publicURL, deliveryURL)
}
