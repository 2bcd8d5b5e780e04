// Package pgtest runs throwaway PostgreSQL clusters for tests: initdb in a temporary
// directory, the server on a unix socket in that directory (no TCP port), stopped by PID
// when the test binary is done. One shared cluster per test binary (Main, NewDB) keeps
// suites fast: each test gets a database of its own. Tests that stop or crash the server
// start a cluster of their own (Start).
//
// initdb and postgres refuse to run as root, and CI runs as root: then the cluster runs as
// the unprivileged user "nobody" (setuid in the child, the directory chowned to it). The
// root test process still reaches the socket. Without PostgreSQL installed a test skips,
// and fails under CI=true (internal/testenv).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshnode/meshnode/internal/testenv"
)

// Cluster is one running (or stopped) PostgreSQL server.
type Cluster struct {
	bin  string // directory of initdb and postgres
	dir  string // owns data/ and the socket
	cred *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// binDir finds the PostgreSQL server binaries: on PATH, else Debian's versioned directory.
func binDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "initdb")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(ms, func(i, j int) bool { return version(ms[i]) > version(ms[j]) })
	if len(ms) == 0 {
		return "", errors.New("PostgreSQL server not installed (run: bash scripts/install-deps.sh)")
	}
	return filepath.Dir(ms[0]), nil
}

func version(p string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return v
}

func requirePostgres(t testing.TB) string {
	t.Helper()
	d, err := binDir()
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("required under CI=true: %v", err)
		}
		t.Skip(err.Error())
	}
	return d
}

// Start initialises and starts a cluster of the test's own, removed when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin := requirePostgres(t)
	c, err := start(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Destroy)
	return c
}

func start(bin string) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs the user nobody to run PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		// The temp dir's parent must let nobody in (it does for /tmp); the dir is its.
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	initdb := c.command("initdb", "-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v: %s", err, out)
	}
	if err := c.Start(); err != nil {
		c.Destroy()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// BinDir holds the cluster's PostgreSQL programs (createdb, psql, ...).
func (c *Cluster) BinDir() string { return c.bin }

// SocketDir is the directory of the server's unix socket (the DSN's host).
func (c *Cluster) SocketDir() string { return c.dir }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + c.dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true,
		// If the test binary dies, the server shuts down at once instead of outliving it.
		Pdeathsig: syscall.SIGQUIT}
	return cmd
}

// Start starts the server (again, after Stop or Kill) and waits until it accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("pgtest: already running")
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// fsync off: a crash of the server (what tests do) loses nothing the OS already has;
	// only a crash of the machine would, and then the cluster is thrown away anyway.
	cmd := c.command("postgres", "-D", c.dataDir(), "-k", c.dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=300",
		"-c", "max_pred_locks_per_transaction=256", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	c.cmd, c.done, c.log = cmd, done, logf
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
			c.cmd = nil
			return fmt.Errorf("pgtest: postgres exited: %s", b)
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready in 30s: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PID is the postmaster's process id (0 when stopped).
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *Cluster) signal(sig syscall.Signal) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		// Its process group: the postmaster and every backend it started.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Stop shuts the server down cleanly (fast mode: open sessions are disconnected).
func (c *Cluster) Stop() { c.signal(syscall.SIGINT) }

// Crash stops the server as a crash would (immediate mode: no checkpoint; recovery from
// the WAL at the next Start).
func (c *Cluster) Crash() { c.signal(syscall.SIGQUIT) }

// Destroy stops the server and removes its directory.
func (c *Cluster) Destroy() {
	c.Stop()
	os.RemoveAll(c.dir)
}

// DSN is the connection string for database db.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", c.dir, db)
}

var dbSeq atomic.Int64

// CreateDB creates an empty database and returns its DSN.
func (c *Cluster) CreateDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return c.DSN(name)
}

var shared struct {
	mu      sync.Mutex
	c       *Cluster
	err     error
	started bool
	inMain  bool
}

// Main runs the tests of a package that uses NewDB, then stops the shared cluster:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c != nil {
		shared.c.Destroy()
	}
	return code
}

// Shared is the test binary's shared cluster, started on first use.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin := requirePostgres(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		t.Fatal("pgtest: the package needs func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	}
	if !shared.started {
		shared.started = true
		shared.c, shared.err = start(bin)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// NewDB returns the DSN of a fresh database on the shared cluster.
func NewDB(t testing.TB) string {
	t.Helper()
	return Shared(t).CreateDB(t)
}
