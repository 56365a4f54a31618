package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int
	CPUModel  string
	MemTotal  string
	Kernel    string
	GoVersion string
	GOARCH    string
}

// ReadMachine reads the machine's description from /proc and the runtime.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOARCH: runtime.GOARCH, CPUModel: "unknown", MemTotal: "unknown", Kernel: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					m.MemTotal = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func gitRevision(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD")
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(b))
	cmd = exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no", "--", "cmd/relay", "internal")
	cmd.Dir = dir
	if out, err := cmd.Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		rev += " (with uncommitted changes in cmd/relay or internal)"
	}
	return rev
}

func moduleVersion(ctx context.Context, dir, mod string) string {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", mod) //nolint:gosec // G204: a module path of ours
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}

// statusString is "200:1234 503:2", "err:" for transport errors.
func statusString(m map[int]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := strconv.Itoa(k)
		if k == 0 {
			name = "err"
		}
		parts = append(parts, name+":"+strconv.Itoa(m[k]))
	}
	return strings.Join(parts, " ")
}

func (c CheckResult) String() string {
	s := fmt.Sprintf("stream: %d acked, %d stored, %d lost, %d duplicated", c.Acked, c.Stored, len(c.Lost), len(c.Duplicated))
	if c.Unacked > 0 {
		s += fmt.Sprintf(", %d stored but not acked", c.Unacked)
	}
	if len(c.Lost) > 0 {
		s += " (first lost " + c.Lost[0] + ")"
	}
	if len(c.Duplicated) > 0 {
		s += " (first duplicated " + c.Duplicated[0] + ")"
	}
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// RoundRatios are the relay's figures over the baseline's (and the bare
// server's) within one round.
type RoundRatios struct {
	Round                  int
	Throughput, CPU, P99   float64 // relay / baseline
	CPUWithNATS            float64 // (relay + nats-server) / (baseline + nats-server)
	P99OverBare            float64 // relay p99 / bare p99
	P50AddedOverBare       time.Duration
	HaveBaseline, HaveBare bool
}

// Ratios are the per-round ratios of scenario.
func (rep *Report) Ratios(scenario string) []RoundRatios {
	byRound := map[int]map[string]RunResult{}
	for _, r := range rep.Runs {
		if r.Scenario != scenario || r.Load.Requests == 0 {
			continue
		}
		if byRound[r.Round] == nil {
			byRound[r.Round] = map[string]RunResult{}
		}
		byRound[r.Round][r.Target] = r
	}
	var out []RoundRatios
	for _, round := range slices.Sorted(maps.Keys(byRound)) {
		t := byRound[round]
		relay, ok := t[TargetRelay]
		if !ok {
			continue
		}
		rr := RoundRatios{Round: round}
		if b, ok := t[TargetBaseline]; ok {
			rr.HaveBaseline = true
			rr.Throughput = relay.Load.Rate() / b.Load.Rate()
			rr.CPU = relay.perDelivery(relay.CPU) / b.perDelivery(b.CPU)
			rr.CPUWithNATS = (relay.perDelivery(relay.CPU) + relay.perDelivery(relay.NATSCPU)) /
				(b.perDelivery(b.CPU) + b.perDelivery(b.NATSCPU))
			rr.P99 = float64(relay.Load.Percentile(0.99)) / float64(b.Load.Percentile(0.99))
		}
		if b, ok := t[TargetBare]; ok {
			rr.HaveBare = true
			rr.P99OverBare = float64(relay.Load.Percentile(0.99)) / float64(b.Load.Percentile(0.99))
			rr.P50AddedOverBare = relay.Load.Percentile(0.5) - b.Load.Percentile(0.5)
		}
		out = append(out, rr)
	}
	return out
}

// MedianRatios is the median of each ratio over the rounds that have it.
func MedianRatios(rs []RoundRatios) RoundRatios {
	var thr, cpu, cpun, p99, p99b, add []float64
	m := RoundRatios{}
	for _, r := range rs {
		if r.HaveBaseline {
			m.HaveBaseline = true
			thr, cpu, cpun, p99 = append(thr, r.Throughput), append(cpu, r.CPU), append(cpun, r.CPUWithNATS), append(p99, r.P99)
		}
		if r.HaveBare {
			m.HaveBare = true
			p99b, add = append(p99b, r.P99OverBare), append(add, float64(r.P50AddedOverBare))
		}
	}
	m.Throughput, m.CPU, m.CPUWithNATS, m.P99 = median(thr), median(cpu), median(cpun), median(p99)
	m.P99OverBare, m.P50AddedOverBare = median(p99b), time.Duration(median(add))
	return m
}

// targetMedians are a target's medians over the rounds of a scenario.
type targetMedians struct {
	n                            int
	rate, p50, p99, max          float64
	cpu, nats, gen, rss          float64
	non2xx, lost, dup, transport int
}

func (rep *Report) medians(scenario, target string) targetMedians {
	var rate, p50, p99, mx, cpu, nats, gen, rss []float64
	var t targetMedians
	for _, r := range rep.Runs {
		if r.Scenario != scenario || r.Target != target || r.Load.Requests == 0 {
			continue
		}
		t.n++
		rate = append(rate, r.Load.Rate())
		p50 = append(p50, float64(r.Load.Percentile(0.5)))
		p99 = append(p99, float64(r.Load.Percentile(0.99)))
		mx = append(mx, float64(r.Load.Max()))
		cpu = append(cpu, r.perDelivery(r.CPU))
		nats = append(nats, r.perDelivery(r.NATSCPU))
		gen = append(gen, r.perDelivery(r.GenCPU))
		rss = append(rss, float64(r.PeakRSS))
		for code, n := range r.Load.Status {
			if code == 0 {
				t.transport += n
			} else if code < 200 || code >= 300 {
				t.non2xx += n
			}
		}
		if r.Check != nil {
			t.lost += len(r.Check.Lost)
			t.dup += len(r.Check.Duplicated)
		}
	}
	t.rate, t.p50, t.p99, t.max = median(rate), median(p50), median(p99), median(mx)
	t.cpu, t.nats, t.gen, t.rss = median(cpu), median(nats), median(gen), median(rss)
	return t
}

// Problems lists what makes the run unusable or the relay wrong: errors,
// targets with no 2xx, lost or duplicated events.
func (rep *Report) Problems() []string {
	var p []string
	for _, r := range rep.Runs {
		where := fmt.Sprintf("%s round %d %s", r.Scenario, r.Round, r.Target)
		if r.Err != "" {
			p = append(p, where+": "+firstLine(r.Err))
		}
		ok := 0
		for code, n := range r.Load.Status {
			if code >= 200 && code < 300 {
				ok += n
			}
		}
		if ok == 0 && r.Err == "" {
			p = append(p, where+": no delivery answered 2xx ("+statusString(r.Load.Status)+")")
		}
		if r.Check != nil && !r.Check.OK() {
			p = append(p, where+": "+r.Check.String())
		}
	}
	return p
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// Markers delimit the generated part of the report in a file, so the
// hand-written text around it survives a rerun.
const (
	BeginMarker = "<!-- relaybench:begin (generated by go run ./cmd/relaybench; do not edit by hand) -->"
	EndMarker   = "<!-- relaybench:end -->"
)

// UpdateFile writes rep's markdown into path between the markers, keeping
// everything around them; without markers it appends; without a file it
// creates one.
func UpdateFile(path string, rep *Report) error {
	var gen bytes.Buffer
	gen.WriteString(BeginMarker + "\n")
	rep.WriteMarkdown(&gen)
	gen.WriteString(EndMarker + "\n")
	old, err := os.ReadFile(path) //nolint:gosec // G304: the report file the user named
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, BeginMarker), strings.Index(s, EndMarker)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + gen.String() + strings.TrimPrefix(s[j+len(EndMarker):], "\n")
	case len(s) > 0:
		s = strings.TrimRight(s, "\n") + "\n\n" + gen.String()
	default:
		s = gen.String()
	}
	return os.WriteFile(path, []byte(s), 0o644) //nolint:gosec // G306: a document in the repository, world-readable like its siblings
}

// WriteMarkdown writes the report: machine, settings, summary of ratios,
// the targets, medians per target, and the raw per-round table.
func (rep *Report) WriteMarkdown(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	m := rep.Machine
	o := rep.Options
	p("Run on %s UTC (%s of benchmark). Command: `%s`.", rep.Started.Format("2006-01-02 15:04"), rep.Finished.Sub(rep.Started).Round(time.Second), rep.Command)
	p("")
	p("Machine: %d CPUs (%s), %s RAM, Linux %s %s, %s; nats-server %s (one process, JetStream on file storage); relay at %s.",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.GOARCH, m.GoVersion, rep.NATSVersion, rep.RelayRevision)
	p("")
	p("Each run: a fresh target process, %s warm-up, then %s measured (at most %d requests); every %d-th request of a worker re-sends a delivery already answered 2xx. Targets alternate order from round to round. CPU is utime+stime from `/proc/PID/stat` over the measured phase divided by the deliveries answered in it (10 ms resolution); peak RSS is `VmHWM`. The load generator runs in the benchmark's own process on the same machine (its CPU is the `gen` column).",
		o.Warmup, o.Duration, o.MaxRequests, o.ResendEvery)
	p("")
	if probs := rep.Problems(); len(probs) > 0 {
		p("**Problems in this run:**")
		p("")
		for _, s := range probs {
			p("- %s", s)
		}
		p("")
	}

	p("#### Relay against the hand-written baseline: medians of the per-round ratios")
	p("")
	p("| scenario | rounds | deliveries/s relay ÷ baseline | CPU per delivery relay ÷ baseline | same, with nats-server's CPU | p99 relay ÷ baseline | p99 relay ÷ bare | p50 added over bare |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, sc := range o.Scenarios {
		rs := rep.Ratios(sc.Name)
		md := MedianRatios(rs)
		p("| %s | %d | %s | %s | %s | %s | %s | %s |", sc.Name, len(rs), ratio(md.Throughput, md.HaveBaseline), ratio(md.CPU, md.HaveBaseline),
			ratio(md.CPUWithNATS, md.HaveBaseline), ratio(md.P99, md.HaveBaseline), ratio(md.P99OverBare, md.HaveBare), addedStr(md))
	}
	p("")

	rep.writeTargets(p)

	p("#### Medians per target")
	p("")
	p("| scenario | target | runs | deliveries/s | p50 | p99 | max | CPU µs/delivery | nats-server µs/delivery | gen µs/delivery | peak RSS | non-2xx | transport errors | lost | duplicated |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, sc := range o.Scenarios {
		for _, t := range o.Targets {
			md := rep.medians(sc.Name, t)
			if md.n == 0 {
				continue
			}
			lost, dup := strconv.Itoa(md.lost), strconv.Itoa(md.dup)
			if t == TargetBare {
				lost, dup = "–", "–"
			}
			p("| %s | %s | %d | %.0f | %s | %s | %s | %.1f | %.1f | %.1f | %.1f MB | %d | %d | %s | %s |", sc.Name, t, md.n, md.rate,
				fmtDur(time.Duration(md.p50)), fmtDur(time.Duration(md.p99)), fmtDur(time.Duration(md.max)),
				md.cpu, md.nats, md.gen, md.rss/1e6, md.non2xx, md.transport, lost, dup)
		}
	}
	p("")

	p("#### Ratios per round")
	p("")
	p("| scenario | round | deliveries/s ÷ baseline | CPU ÷ baseline | CPU with nats ÷ baseline | p99 ÷ baseline | p99 ÷ bare | p50 added over bare |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, sc := range o.Scenarios {
		for _, r := range rep.Ratios(sc.Name) {
			p("| %s | %d | %s | %s | %s | %s | %s | %s |", sc.Name, r.Round, ratio(r.Throughput, r.HaveBaseline), ratio(r.CPU, r.HaveBaseline),
				ratio(r.CPUWithNATS, r.HaveBaseline), ratio(r.P99, r.HaveBaseline), ratio(r.P99OverBare, r.HaveBare), addedStr(r))
		}
	}
	p("")

	p("#### Raw runs")
	p("")
	p("| scenario | round | order | target | measured | deliveries/s | p50 | p99 | max | statuses (all, warm-up included) | re-sent | CPU µs/delivery | nats µs/delivery | gen µs/delivery | peak RSS | stream check |")
	p("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, r := range rep.Runs {
		check := "–"
		if r.Check != nil {
			check = fmt.Sprintf("%d acked, %d stored, %d lost, %d dup", r.Check.Acked, r.Check.Stored, len(r.Check.Lost), len(r.Check.Duplicated))
			if r.Check.Unacked > 0 {
				check += fmt.Sprintf(", %d stored unacked", r.Check.Unacked)
			}
		}
		if r.Err != "" {
			check += "; error: " + strings.ReplaceAll(firstLine(r.Err), "|", "/")
		}
		p("| %s | %d | %d | %s | %d | %.0f | %s | %s | %s | %s | %d | %.1f | %.1f | %.1f | %.1f MB | %s |", r.Scenario, r.Round, r.Order, r.Target,
			r.Load.Requests, r.Load.Rate(), fmtDur(r.Load.Percentile(0.5)), fmtDur(r.Load.Percentile(0.99)), fmtDur(r.Load.Max()),
			statusString(r.Load.Status), r.Load.Resent, r.perDelivery(r.CPU), r.perDelivery(r.NATSCPU), r.perDelivery(r.GenCPU),
			float64(r.PeakRSS)/1e6, check)
	}
}

// writeTargets compares the medians with issue 10's targets, for the
// scenarios present.
func (rep *Report) writeTargets(p func(string, ...any)) {
	type row struct{ goal, measured, met string }
	var rows []row
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "**no**"
	}
	has := func(name string) bool {
		return slices.ContainsFunc(rep.Options.Scenarios, func(s Scenario) bool { return s.Name == name })
	}
	if has("c64-1KiB") {
		md := MedianRatios(rep.Ratios("c64-1KiB"))
		if md.HaveBaseline {
			rows = append(rows,
				row{"c64-1KiB deliveries/s ≥ 1.30× baseline", fmt.Sprintf("%.2f×", md.Throughput), yes(md.Throughput >= 1.30)},
				row{"c64-1KiB CPU per delivery (relay process) ≤ 0.70× baseline", fmt.Sprintf("%.2f×", md.CPU), yes(md.CPU <= 0.70)},
				row{"c64-1KiB p99 ≤ baseline", fmt.Sprintf("%.2f×", md.P99), yes(md.P99 <= 1)})
		}
		t := rep.medians("c64-1KiB", TargetRelay)
		if t.n > 0 {
			rows = append(rows, row{"c64-1KiB peak RSS ≤ 40 MB", fmt.Sprintf("%.1f MB", t.rss/1e6), yes(t.rss <= 40e6)})
		}
	}
	if has("c512-1KiB") {
		md := MedianRatios(rep.Ratios("c512-1KiB"))
		if md.HaveBaseline {
			rows = append(rows, row{"c512-1KiB p99 ≤ baseline", fmt.Sprintf("%.2f×", md.P99), yes(md.P99 <= 1)})
		}
		t := rep.medians("c512-1KiB", TargetRelay)
		if t.n > 0 {
			rows = append(rows, row{"c512-1KiB peak RSS ≤ 80 MB", fmt.Sprintf("%.1f MB", t.rss/1e6), yes(t.rss <= 80e6)})
		}
	}
	var non2xx, lost, dup, transport int
	for _, sc := range rep.Options.Scenarios {
		t := rep.medians(sc.Name, TargetRelay)
		non2xx, lost, dup, transport = non2xx+t.non2xx, lost+t.lost, dup+t.dup, transport+t.transport
	}
	rows = append(rows, row{"relay: zero lost, zero duplicated, zero non-2xx (all scenarios, all rounds)",
		fmt.Sprintf("%d lost, %d duplicated, %d non-2xx, %d transport errors", lost, dup, non2xx, transport),
		yes(lost == 0 && dup == 0 && non2xx == 0 && transport == 0)})
	p("#### Issue 10's targets")
	p("")
	p("| target | measured | met |")
	p("| --- | ---: | --- |")
	for _, r := range rows {
		p("| %s | %s | %s |", r.goal, r.measured, r.met)
	}
	p("")
}

func ratio(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func addedStr(r RoundRatios) string {
	if !r.HaveBare {
		return "–"
	}
	return fmtDur(r.P50AddedOverBare)
}
