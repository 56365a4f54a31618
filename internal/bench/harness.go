package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The targets a round drives, each in its own process.
const (
	TargetRelay    = "relay"    // the real relay binary, built from cmd/relay
	TargetBaseline = "baseline" // NewBaseline, run by "relaybench serve-baseline"
	TargetBare     = "bare"     // NewBare, run by "relaybench serve-bare"
)

// Streams and subject prefixes of the targets that publish.
const (
	RelayStream    = "DATAGRID" // the relay's default RELAY_STREAM
	BaselineStream = "BASELINE"
	BaselinePrefix = "baseline"
	relayPath      = "/webhooks/datagrid" // the relay's default delivery path
)

// Secret signs every delivery of the benchmark; it protects nothing.
const Secret = "whsec_relaybench" //nolint:gosec // G101: a throwaway secret for loopback load

// SecretEnv passes the secret to "relaybench serve-baseline".
const SecretEnv = "RELAYBENCH_SECRET" //nolint:gosec // G101: a variable's name, not a secret

// Scenario is one load shape, run for Rounds rounds.
type Scenario struct {
	Name        string
	Concurrency int
	BodySize    int
	Rounds      int
	Note        string // what the scenario is for, in the report
}

// DefaultScenarios are the shapes of issue 10; the first is the main one.
func DefaultScenarios() []Scenario {
	return []Scenario{
		{Name: "c64-1KiB", Concurrency: 64, BodySize: 1024, Rounds: 9, Note: "the main comparison"},
		{Name: "c1-1KiB", Concurrency: 1, BodySize: 1024, Rounds: 3, Note: "one at a time: latency added over bare HTTP"},
		{Name: "c64-64KiB", Concurrency: 64, BodySize: 64 * 1024, Rounds: 3, Note: "large bodies: cost of reading, hashing and storing them"},
		{Name: "c512-1KiB", Concurrency: 512, BodySize: 1024, Rounds: 5, Note: "many senders: cost of concurrency"},
	}
}

// Options configure a benchmark run.
type Options struct {
	Scenarios   []Scenario
	Targets     []string // in the order of the first round; later rounds rotate it
	Warmup      time.Duration
	Duration    time.Duration // measured phase of each run
	MaxRequests int           // bound per run
	ResendEvery int
	Self        string    // this binary, for the serve-* subcommands
	Log         io.Writer // progress lines
	PerfDir     string    // if set, `perf record` the relay's first run of each scenario here
	// RelayBin, if set, is a relay binary built beforehand (another commit,
	// say) used instead of building cmd/relay from the working tree.
	RelayBin      string
	RelayRevision string // what RelayBin was built from, for the report
}

// RunResult is one target driven once.
type RunResult struct {
	Scenario string
	Round    int // from 1
	Order    int // position in its round, from 1
	Target   string
	Load     LoadResult
	CPU      time.Duration // target process, measured phase
	NATSCPU  time.Duration // nats-server, same window
	GenCPU   time.Duration // this process (the load generator), same window
	PeakRSS  int64         // target process, bytes
	Check    *CheckResult  // nil for the bare server
	Err      string
}

// perDelivery is d spread over the measured deliveries, in microseconds.
func (r RunResult) perDelivery(d time.Duration) float64 {
	if r.Load.Requests == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.Load.Requests)
}

// Report is a whole benchmark run.
type Report struct {
	Started, Finished time.Time
	Command           string
	Machine           Machine
	NATSVersion       string
	RelayRevision     string
	Options           Options
	Runs              []RunResult
}

// Run builds the relay and nats-server, starts one nats-server and drives
// every target of every scenario for the rounds asked, alternating the
// order. Each run starts a fresh target process (so its peak RSS is its
// own), measures it, stops it and checks its stream.
func Run(ctx context.Context, o Options) (*Report, error) {
	rep := &Report{Started: time.Now().UTC(), Options: o, Machine: ReadMachine()}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", a...)
		}
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	rep.RelayRevision = gitRevision(ctx, root)
	rep.NATSVersion = moduleVersion(ctx, root, "github.com/nats-io/nats-server/v2")
	tmp, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	logf("building the relay and nats-server in %s", tmp)
	relayBin, natsBin := filepath.Join(tmp, "relay"), filepath.Join(tmp, "nats-server")
	if o.RelayBin != "" {
		relayBin = o.RelayBin
		rep.RelayRevision = o.RelayRevision
		if rep.RelayRevision == "" {
			rep.RelayRevision = "a prebuilt binary (" + filepath.Base(o.RelayBin) + ")"
		}
	} else if err := goBuild(ctx, root, relayBin, "./cmd/relay"); err != nil {
		return nil, fmt.Errorf("%w\n(the relay must build; -relay-bin runs a binary built elsewhere)", err)
	}
	if err := goBuild(ctx, root, natsBin, "github.com/nats-io/nats-server/v2"); err != nil {
		return nil, err
	}

	ns, natsURL, err := startNATS(natsBin, filepath.Join(tmp, "jetstream"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = ns.stop(30 * time.Second) }()
	logf("nats-server %s (pid %d) on %s, file storage", rep.NATSVersion, ns.pid(), natsURL)
	nc, err := nats.Connect(natsURL, nats.Name("relaybench-checker"))
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}

	b := &bencher{o: o, js: js, natsURL: natsURL, natsPID: ns.pid(), relayBin: relayBin, logf: logf}
	for si, sc := range o.Scenarios {
		for round := 1; round <= sc.Rounds; round++ {
			order := rotate(o.Targets, si+round-1)
			for pos, target := range order {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				r := b.runOne(ctx, sc, round, target)
				r.Order = pos + 1
				rep.Runs = append(rep.Runs, r)
				logf("%s", r.summary())
			}
		}
	}
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// rotate is s started at index k (mod len(s)).
func rotate(s []string, k int) []string {
	if len(s) == 0 {
		return nil
	}
	k %= len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

// startNATS runs one nats-server with JetStream on file storage in dir, on
// a random loopback port, and returns its client URL once it is ready.
func startNATS(bin, dir string) (*process, string, error) {
	lines := make(chan string, 256)
	p, err := startProcess("nats-server", bin, []string{"-a", "127.0.0.1", "-p", "-1", "-js", "-sd", dir, "-n", "relaybench"}, childEnv(), lines)
	if err != nil {
		return nil, "", err
	}
	addr, err := p.waitLine(lines, "Listening for client connections on ", 30*time.Second)
	if err == nil {
		_, err = p.waitLine(lines, "Server is ready", 30*time.Second)
	}
	if err != nil {
		_ = p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, "nats://" + addr, nil
}

type bencher struct {
	o        Options
	js       jetstream.JetStream
	natsURL  string
	natsPID  int
	relayBin string
	logf     func(string, ...any)
	perfDone map[string]bool
}

// runOne starts target, drives it with sc's load, stops it and checks its
// stream. Failures are recorded in the result, not returned: one bad run
// does not lose the others.
func (b *bencher) runOne(ctx context.Context, sc Scenario, round int, target string) RunResult {
	r := RunResult{Scenario: sc.Name, Round: round, Target: target}
	stream := map[string]string{TargetRelay: RelayStream, TargetBaseline: BaselineStream}[target]
	var from uint64
	if stream != "" {
		last, err := LastSeq(ctx, b.js, stream)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		from = last + 1
	}
	p, url, err := b.start(target)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	var cpu0, nats0, gen0 time.Duration
	var perf *exec.Cmd
	cfg := LoadConfig{
		URL: url, Secret: []byte(Secret), Concurrency: sc.Concurrency, BodySize: sc.BodySize,
		Warmup: b.o.Warmup, Duration: b.o.Duration, MaxRequests: b.o.MaxRequests, ResendEvery: b.o.ResendEvery,
		IDPrefix: fmt.Sprintf("evt_%s_r%d_%s_", sc.Name, round, target),
		OnMeasure: func() {
			cpu0, _ = ProcCPU(p.pid())
			nats0, _ = ProcCPU(b.natsPID)
			gen0, _ = ProcCPU(os.Getpid())
			if target == TargetRelay && b.o.PerfDir != "" && !b.perfDone[sc.Name] {
				perf = startPerf(b.o.PerfDir, sc.Name, p.pid())
			}
		},
	}
	load, lerr := Load(ctx, cfg)
	cpu1, err1 := ProcCPU(p.pid())
	nats1, err2 := ProcCPU(b.natsPID)
	gen1, err3 := ProcCPU(os.Getpid())
	rss, err4 := ProcPeakRSS(p.pid())
	if perf != nil {
		_ = perf.Process.Signal(syscall.SIGINT)
		_ = perf.Wait()
		if b.perfDone == nil {
			b.perfDone = map[string]bool{}
		}
		b.perfDone[sc.Name] = true
	}
	r.Load, r.CPU, r.NATSCPU, r.GenCPU, r.PeakRSS = load, cpu1-cpu0, nats1-nats0, gen1-gen0, rss
	if err := errors.Join(lerr, err1, err2, err3, err4); err != nil {
		r.Err = err.Error()
	}
	if err := p.stop(30 * time.Second); err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	if stream != "" {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		ids, err := ReadIDs(cctx, b.js, stream, from)
		if err != nil {
			r.Err = strings.TrimSpace(r.Err + "; check: " + err.Error())
			return r
		}
		c := Check(load.Acked, ids)
		r.Check = &c
		// The store of the next runs stays small; sequences go on.
		if s, err := b.js.Stream(cctx, stream); err == nil {
			_ = s.Purge(cctx)
		}
	}
	return r
}

// start runs target and returns it with its delivery URL once it takes
// deliveries.
func (b *bencher) start(target string) (*process, string, error) {
	switch target {
	case TargetRelay:
		var lastErr error
		for range 3 { // a free port can be taken between the check and the start
			p, url, err := b.startRelay()
			if err == nil {
				return p, url, nil
			}
			lastErr = err
		}
		return nil, "", lastErr
	case TargetBaseline, TargetBare:
		lines := make(chan string, 64)
		args := []string{"serve-" + target}
		if target == TargetBaseline {
			args = append(args, "-nats", b.natsURL, "-stream", BaselineStream, "-prefix", BaselinePrefix)
		}
		p, err := startProcess(target, b.o.Self, args, childEnv(SecretEnv+"="+Secret), lines)
		if err != nil {
			return nil, "", err
		}
		addr, err := p.waitLine(lines, ListeningPrefix, 30*time.Second)
		if err != nil {
			_ = p.stop(5 * time.Second)
			return nil, "", err
		}
		return p, "http://" + addr + "/", nil
	}
	return nil, "", fmt.Errorf("unknown target %q", target)
}

// startRelay runs the relay binary with a static secret and default
// settings but LOG_LEVEL=warn, and waits for /readyz to answer 200.
func (b *bencher) startRelay() (*process, string, error) {
	pub, err1 := freePort()
	adm, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return nil, "", err
	}
	env := childEnv(
		"RELAY_WEBHOOK_SECRET="+Secret,
		"NATS_URL="+b.natsURL,
		"RELAY_LISTEN_ADDR=127.0.0.1:"+strconv.Itoa(pub),
		"RELAY_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm),
		"LOG_LEVEL=warn",
	)
	p, err := startProcess(TargetRelay, b.relayBin, []string{"serve"}, env, nil)
	if err != nil {
		return nil, "", err
	}
	ready := "http://127.0.0.1:" + strconv.Itoa(adm) + "/readyz"
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(ready)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, "http://127.0.0.1:" + strconv.Itoa(pub) + relayPath, nil
			}
		}
		select {
		case <-p.exited:
			return nil, "", fmt.Errorf("relay exited before it was ready: %w; last output:\n%s", p.err, p.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.stop(5 * time.Second)
			return nil, "", fmt.Errorf("relay not ready within 30s; last output:\n%s", p.out)
		}
	}
}

// startPerf records the relay's CPU profile with call graphs while the
// measured phase runs, when perf is installed; nil otherwise.
func startPerf(dir, scenario string, pid int) *exec.Cmd {
	path, err := exec.LookPath("perf")
	if err != nil {
		return nil
	}
	out := filepath.Join(dir, "relay-"+scenario+".perf.data")
	cmd := exec.Command(path, "record", "-F", "999", "-g", "-o", out, "-p", strconv.Itoa(pid)) //nolint:gosec // G204: perf from PATH, on our own child
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil
	}
	return cmd
}

// summary is the progress line of a run.
func (r RunResult) summary() string {
	if r.Err != "" && r.Load.Requests == 0 {
		return fmt.Sprintf("%s round %d %-8s error: %s", r.Scenario, r.Round, r.Target, r.Err)
	}
	s := fmt.Sprintf("%s round %d %-8s %8.0f/s p50 %s p99 %s max %s cpu %.1fµs nats %.1fµs gen %.1fµs rss %.1fMB %s",
		r.Scenario, r.Round, r.Target, r.Load.Rate(), fmtDur(r.Load.Percentile(0.5)), fmtDur(r.Load.Percentile(0.99)),
		fmtDur(r.Load.Max()), r.perDelivery(r.CPU), r.perDelivery(r.NATSCPU), r.perDelivery(r.GenCPU), float64(r.PeakRSS)/1e6, statusString(r.Load.Status))
	if r.Check != nil {
		s += " " + r.Check.String()
	}
	if r.Err != "" {
		s += " error: " + r.Err
	}
	return s
}
