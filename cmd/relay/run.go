package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	"github.com/datagrid-relay/relay/internal/config"
)

// Set at link time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

// revision is the commit the binary was built from: the link-time commit,
// else the VCS revision Go stamps into every build from a checkout (plain
// go build or go install), with "+dirty" for uncommitted changes.
func revision() string {
	if commit != "unknown" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return commit
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return commit
	case len(rev) > 12:
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// command is one subcommand of relay.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

// env is what a command may touch of the outside world.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

func commands() []command {
	return []command{
		{"serve", "run the gateway (the default)", runServe},
		{"demo", "the whole pipeline on this machine: embedded NATS, a Datagrid simulator, the relay; --events N stops after N", runDemo},
		{"status", "show the registration (stored state and what the API says); exit 0 healthy, 1 not", runStatus},
		{"rotate", "rotate the signing secret with no lost and no duplicated events", runRotate},
		{"deregister", "delete the webhook at Datagrid and the stored state (used on uninstall)", runDeregister},
		{"trigger", "send one signed sample delivery to a running relay: relay trigger EVENT_TYPE", runTrigger},
		{"version", "print version, commit and Go version", runVersion},
	}
}

// usageError is a bad command line; it exits 2 like a bad configuration.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// run is the whole program: args exclude the program name; getenv, stdout
// and stderr stand for the process's environment and streams.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdout: stdout, stderr: stderr}
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	} else if len(args) > 0 && isHelp(args[0]) {
		printUsage(stdout)
		return nil
	}
	if name == "help" {
		printUsage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, e, args)
		}
	}
	return &usageError{fmt.Sprintf("unknown command %q; run 'relay --help' for the list", name)}
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help"
}

// newFlags returns a flag set for a command whose --help prints usage,
// the command's flags and, if withEnv, every environment variable.
func newFlags(name, synopsis string, withEnv bool, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: relay %s\n\n%s\n", name, synopsis)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(out, "\nFlags:")
			fs.PrintDefaults()
		}
		if withEnv {
			fmt.Fprintln(out)
			printEnv(out)
		}
	}
	return fs
}

// parseFlags parses args; --help is not an error.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, &usageError{err.Error()}
	}
	return false, nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `relay: Datagrid webhooks to NATS.

Relay receives Datagrid's signed webhook deliveries, verifies them and
publishes each to NATS on <prefix>.<event_type>, answering Datagrid 2xx only
once JetStream has stored the event.

Usage: relay [command] [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	_ = tw.Flush()
	fmt.Fprint(w, "\nRun 'relay COMMAND --help' for a command's flags.\n\n")
	printEnv(w)
}

func printEnv(w io.Writer) {
	fmt.Fprintln(w, "Environment variables:")
	for _, v := range config.Vars() {
		def := v.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(w, "  %s (default: %s)\n      %s\n", v.Name, def, v.Help)
	}
}

func runVersion(_ context.Context, e env, args []string) error {
	fs := newFlags("version", "Print the version, the commit and the Go version.", false, e.stdout)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "relay %s (commit %s, %s)\n", version, revision(), runtime.Version())
	return nil
}

// exitCode prints err, if any, and maps it to the process exit code:
// 0 success, 2 bad configuration or command line, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var cfgErr *config.Error
	var useErr *usageError
	switch {
	case errors.As(err, &cfgErr):
		for _, p := range cfgErr.Problems {
			fmt.Fprintf(stderr, "relay: configuration: %s\n", p)
		}
		return 2
	case errors.As(err, &useErr):
		fmt.Fprintf(stderr, "relay: %s\n", useErr.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "relay: %s\n", err)
		return 1
	}
}
