package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/datagrid-relay/relay/internal/bootstrap"
	"github.com/datagrid-relay/relay/internal/config"
	"github.com/datagrid-relay/relay/internal/event"
	"github.com/datagrid-relay/relay/internal/logging"
	"github.com/datagrid-relay/relay/internal/metrics"
	"github.com/datagrid-relay/relay/internal/sample"
	"github.com/datagrid-relay/relay/internal/server"
)

// errUnhealthy makes relay status exit 1.
var errUnhealthy = errors.New("registration is not healthy")

// registration is what the one-shot commands work with: the relay's own
// parts (server.Build), on a NATS connection of their own.
type registration struct {
	cfg       config.Config
	registrar *bootstrap.Registrar // nil when the webhook is managed by hand
	close     func()
}

// openRegistration loads the configuration and, when the relay registers
// itself, builds its parts. A command in static-secret mode gets a nil
// registrar and no connection.
func openRegistration(e env) (*registration, error) {
	cfg, err := config.Load(e.getenv)
	if err != nil {
		return nil, err
	}
	if !cfg.Registering() {
		return &registration{cfg: cfg, close: func() {}}, nil
	}
	log, err := logging.New("warn", cfg.LogFormat, e.stderr)
	if err != nil {
		return nil, err
	}
	parts, err := server.Build(cfg, "datagrid-relay-cli/"+version, log, metrics.New(prometheus.NewRegistry(), buildInfo()))
	if err != nil {
		return nil, err
	}
	return &registration{cfg: cfg, registrar: parts.Registrar, close: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = parts.Conn.Shutdown(ctx)
		_ = log.Sync()
	}}, nil
}

func timeoutFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("timeout", 60*time.Second, "give up after this long (NATS or the Datagrid API unreachable)")
}

// oneShot makes a registration command: its flags, the configuration, the
// registrar on its own NATS connection, all bounded by --timeout. static
// runs instead of managed when the webhook is managed by hand.
func oneShot(name, synopsis string, static func(env, config.Config) error, managed func(context.Context, env, *registration) error) func(context.Context, env, []string) error {
	return func(ctx context.Context, e env, args []string) error {
		fs := newFlags(name, synopsis, true, e.stdout)
		timeout := timeoutFlag(fs)
		if help, err := parseFlags(fs, args); help || err != nil {
			return err
		}
		reg, err := openRegistration(e)
		if err != nil {
			return err
		}
		defer reg.close()
		if reg.registrar == nil {
			return static(e, reg.cfg)
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return managed(ctx, e, reg)
	}
}

func runStatus(ctx context.Context, e env, args []string) error {
	return oneShot("status",
		"Show the registration as the relay sees it: the stored state and what the Datagrid API says.\nExits 0 when healthy, 1 when not.",
		func(e env, cfg config.Config) error {
			fmt.Fprintf(e.stdout, "registration: static secret(s) from RELAY_WEBHOOK_SECRET (%d); the relay registers nothing\n", len(cfg.WebhookSecrets))
			return nil
		},
		func(ctx context.Context, e env, reg *registration) error {
			rep, err := reg.registrar.Status(ctx)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			printReport(e.stdout, rep, reg.cfg)
			if len(rep.Problems) > 0 {
				return errUnhealthy
			}
			return nil
		})(ctx, e, args)
}

func printReport(w io.Writer, rep bootstrap.Report, cfg config.Config) {
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "registration: healthy")
	} else {
		fmt.Fprintln(w, "registration: NOT healthy")
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "  problem:  %s\n", p)
		}
	}
	fmt.Fprintf(w, "  wanted:   %s for %s\n", cfg.PublicURL, strings.Join(cfg.Events, ", "))
	st := rep.State
	if !rep.Stored {
		return
	}
	fmt.Fprintf(w, "  stored:   %s\n", st.Summary())
	if st.Registered() {
		fmt.Fprintf(w, "  secret:   age %s\n", time.Since(st.SecretCreatedAt).Round(time.Second))
	}
	if wh := rep.Webhook; wh != nil {
		fmt.Fprintf(w, "  datagrid: webhook %s enabled=%v url=%s events=%s\n", wh.ID, wh.Enabled, wh.URL, strings.Join(wh.Events, ","))
	}
}

func runRotate(ctx context.Context, e env, args []string) error {
	return oneShot("rotate",
		"Rotate the signing secret: create a new webhook and secret, accept both for\nRELAY_ROTATION_GRACE, then the running relays delete the old webhook. No event is\nlost; an event Datagrid delivers through both webhooks meanwhile is stored once.",
		func(env, config.Config) error {
			return errors.New("RELAY_WEBHOOK_SECRET is set: the webhook is managed by hand, rotate it at Datagrid and list both secrets")
		},
		func(ctx context.Context, e env, reg *registration) error {
			st, err := reg.registrar.Rotate(ctx)
			if err != nil {
				return fmt.Errorf("rotate: %w", err)
			}
			fmt.Fprintf(e.stdout, "rotated: new webhook %s; previous webhook %s and its secret accepted until %s, then deleted\n",
				st.WebhookID, st.Previous.WebhookID, st.Previous.ExpiresAt.Format(time.RFC3339))
			return nil
		})(ctx, e, args)
}

func runDeregister(ctx context.Context, e env, args []string) error {
	return oneShot("deregister",
		"Delete the relay's webhook(s) at Datagrid and the stored registration (used on\nuninstall). Running relays then stop registering until restarted.",
		func(e env, _ config.Config) error {
			fmt.Fprintln(e.stdout, "RELAY_WEBHOOK_SECRET is set: nothing was registered, nothing to delete")
			return nil
		},
		func(ctx context.Context, e env, reg *registration) error {
			ids, err := reg.registrar.Deregister(ctx)
			if err != nil {
				return fmt.Errorf("deregister: %w", err)
			}
			fmt.Fprintf(e.stdout, "deregistered: deleted %d webhook(s) %v and the stored registration\n", len(ids), ids)
			return nil
		})(ctx, e, args)
}

func runTrigger(ctx context.Context, e env, args []string) error {
	fs := newFlags("trigger EVENT_TYPE", "Send one signed sample delivery of EVENT_TYPE to a running relay, as Datagrid would.\nThe secret is --secret, else RELAY_WEBHOOK_SECRET, else the stored registration's.\nKnown event types: "+strings.Join(event.Known(), ", "), false, e.stdout)
	url := fs.String("url", "", "delivery URL (default: http://127.0.0.1:<port of RELAY_LISTEN_ADDR><path of RELAY_PUBLIC_URL>)")
	secret := fs.String("secret", "", "signing secret to use (visible to other users in the process list: prefer RELAY_WEBHOOK_SECRET)")
	id := fs.String("id", "", "event id (default: a new one)")
	timeout := timeoutFlag(fs)
	var positional []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") { // relay trigger TYPE --flags
		positional, args = args[:1], args[1:]
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	positional = append(positional, fs.Args()...)
	if len(positional) != 1 {
		return &usageError{"trigger needs exactly one EVENT_TYPE, e.g. relay trigger batch_prediction.completed"}
	}
	eventType := positional[0]
	if !event.ValidType(eventType) {
		return &usageError{fmt.Sprintf("event type %q is not [a-z0-9_] parts joined by dots", eventType)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *secret == "" || *url == "" {
		reg, err := openRegistration(e)
		if err != nil {
			return err
		}
		defer reg.close()
		if *url == "" {
			*url = localDeliveryURL(reg.cfg)
		}
		if *secret == "" {
			if *secret, err = storedSecret(ctx, reg); err != nil {
				return err
			}
		}
	}
	if *id == "" {
		*id = fmt.Sprintf("evt_trigger_%d", time.Now().UnixNano())
	}
	body := sample.Delivery(eventType, *id, 0, time.Now())
	status, answer, err := sample.Send(ctx, *url, *secret, body, time.Now())
	if err != nil {
		return fmt.Errorf("trigger: %w", err)
	}
	fmt.Fprintf(e.stdout, "POST %s (%s, event %s): %d %s\n", *url, eventType, *id, status, answer)
	if status/100 != 2 {
		return fmt.Errorf("trigger: the relay answered %d", status)
	}
	return nil
}

func storedSecret(ctx context.Context, reg *registration) (string, error) {
	if reg.registrar == nil {
		return reg.cfg.WebhookSecrets[0], nil
	}
	st, err := reg.registrar.State(ctx)
	if err != nil {
		return "", fmt.Errorf("read the stored secret: %w", err)
	}
	if !st.Registered() {
		return "", errors.New("no secret stored yet: " + st.Summary())
	}
	return st.Secret, nil
}

// localDeliveryURL is where a relay with cfg listens, seen from its host.
func localDeliveryURL(cfg config.Config) string {
	_, port, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil {
		port = "8080"
	}
	return "http://127.0.0.1:" + port + cfg.DeliveryPath()
}
