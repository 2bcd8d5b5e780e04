package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL.
const StopTimeout = 5 * time.Second

// Process is a long-running program inside a namespace, its output captured to a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // valid after done is closed
}

// Start runs bin with args inside the namespace. Its stdout and stderr go to a file in
// t.TempDir() named after name; when the test has failed, the end of that file is printed.
// The process is stopped in t.Cleanup, and killed by the kernel if the test process dies.
func (n *Namespace) Start(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.log", name, time.Now().Format("150405.000")))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s in %s: %v", name, n.Name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(StopTimeout); err != nil {
			t.Logf("stop %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", name, logPath, p.Tail(60))
		}
	})
	return p
}

// PID is the program's process ID (`ip netns exec` execs in place).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits at most timeout for the process to end and returns its exit error.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.PID(), timeout)
	}
}

// Stop sends SIGTERM, waits up to timeout, then sends SIGKILL. Stopping an ended process is
// not an error; the exit status of a stopped process is not reported.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	return p.Kill()
}

// Terminate sends SIGTERM and returns at once; Wait reports how the process ended.
func (p *Process) Terminate() error { return p.cmd.Process.Signal(syscall.SIGTERM) }

// Kill sends SIGKILL (a crash, as far as the program can tell) and waits for the process to go.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL for 10s", p.Name, p.PID())
	}
}

// Log returns everything the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrExited is returned by WaitLog when the process ends before the text appears.
var ErrExited = errors.New("process exited")

// WaitLog waits until the log contains substr.
func (p *Process) WaitLog(timeout time.Duration, substr string) error {
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited() // before reading, so the last output is seen
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		if exited {
			return fmt.Errorf("%s: %w (%v) before logging %q", p.Name, ErrExited, p.err, substr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has not logged %q within %v", p.Name, substr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
