package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child process whose output is kept (the last lines) for
// error messages.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *tail
	exited chan struct{}
	err    error // set before exited closes
}

// startProcess starts path with args and env. If lines is not nil, stdout
// and stderr lines are also sent to it (without blocking) until it is done
// being read; the caller drains nothing.
func startProcess(name, path string, args, env []string, lines chan<- string) (*process, error) {
	cmd := exec.Command(path, args...) //nolint:gosec // G204: binaries this benchmark built, or itself
	cmd.Env = env
	cmd.SysProcAttr = childAttr()
	p := &process{name: name, cmd: cmd, out: &tail{max: 40}, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Go(func() {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64*1024), 1024*1024)
			for sc.Scan() {
				line := sc.Text()
				p.out.add(line)
				if lines != nil {
					select {
					case lines <- line:
					default:
					}
				}
			}
		})
	}
	go func() {
		wg.Wait() // pipes must be read to EOF before Wait
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// pid is the child's process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to grace for the exit, then kills.
func (p *process) stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.exitErr()
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %s after SIGTERM; killed", p.name, grace)
	}
}

func (p *process) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s: %w; last output:\n%s", p.name, p.err, p.out)
	}
	return nil
}

// waitLine waits until the process prints a line starting with prefix and
// returns the rest of it.
func (p *process) waitLine(lines <-chan string, prefix string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l := <-lines:
			if i := strings.Index(l, prefix); i >= 0 {
				return strings.TrimSpace(l[i+len(prefix):]), nil
			}
		case <-p.exited:
			return "", fmt.Errorf("%s exited before it was ready: %w; last output:\n%s", p.name, p.err, p.out)
		case <-deadline:
			return "", fmt.Errorf("%s printed no %q within %s; last output:\n%s", p.name, prefix, timeout, p.out)
		}
	}
}

// tail keeps the last lines written to it.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.max {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, l)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// freePort is a loopback port free a moment ago, for a child that must be
// told its port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is the parent's environment without the relay's and NATS's
// variables, plus extra: every target sees the same Go runtime settings.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RELAY_") || strings.HasPrefix(k, "NATS_") ||
			strings.HasPrefix(k, "DATAGRID_") || strings.HasPrefix(k, "LOG_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// goBuild builds pkg into out from the module in dir.
func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg) //nolint:gosec // G204: fixed packages into our temp dir
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run relaybench from the relay's checkout")
	}
	return strings.TrimSuffix(gomod, "/go.mod"), nil
}
