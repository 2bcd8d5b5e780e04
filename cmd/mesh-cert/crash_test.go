package main

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/internal/testenv"
)

// serveProc is `mesh-cert serve` running as a real process, so it can be SIGKILLed.
type serveProc struct {
	cmd  *exec.Cmd
	logs *lockedBuffer
}

func buildMeshCert(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mesh-cert")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startServe(t *testing.T, bin, config string) *serveProc {
	t.Helper()
	p := &serveProc{cmd: exec.Command(bin, "serve", "-config", config), logs: &lockedBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	sock := filepath.Join(filepath.Dir(config), "state", "admin.sock")
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := authority.DialAdmin(sock); err == nil {
			return p
		}
	}
	t.Fatalf("serve did not start:\n%s", p.logs.String())
	return nil
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type renewer struct {
	certPEM, key, serviceKey []byte
	url                      string
	pin                      []byte
	ok                       int
	// pending is the new key of the renewal in progress: a retry after a lost reply
	// must ask for the same key, or the service takes it for a fork.
	pending []byte
}

func (r *renewer) renew(ctx context.Context, c *client.Client) (*client.Renewal, error) {
	if r.pending == nil {
		_, r.pending, _ = cert.GenerateX25519()
	}
	res, err := c.Renew(ctx, client.RenewParams{CertPEM: r.certPEM, Key: r.key, ServiceKey: r.serviceKey, NewKey: r.pending})
	if err == nil {
		r.certPEM, r.key, r.pending = res.CertPEM, res.Key, nil
	}
	return res, err
}

// TestSIGKILLDuringEnrollAndRenewalStormLosesNothingAndReusesNothing kills the service
// while 50 clients race for one token and 8 hosts renew in a loop, restarts it, and checks
// that the token gave at most one cert over both lives, every issuance has exactly one
// audit record, no renewal counter was accepted twice, and every host can still renew.
func TestSIGKILLDuringEnrollAndRenewalStormLosesNothingAndReusesNothing(t *testing.T) {
	testenv.SkipShort(t)
	bin := buildMeshCert(t)
	dir, config := caService(t, time.Now(), freeLoopbackAddr(t))
	p := startServe(t, bin, config)
	now := time.Now

	var renewers []*renewer
	for i := range 8 {
		r := mustOK(t, meshCert(t, now(), "invite", "-config", config, "-cidr", "servers", "-name", "h"+string(rune('a'+i))))
		e, err := client.Enroll(context.Background(), inviteToken(t, r.stdout), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		renewers = append(renewers, &renewer{certPEM: e.CertPEM, key: e.Key, serviceKey: e.ServiceKey, url: e.URL, pin: e.Pin})
	}
	raceTok := inviteToken(t, mustOK(t, meshCert(t, now(), "invite", "-config", config, "-cidr", "servers", "-name", "race")).stdout)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var enrolled, renewed atomic.Int32
	for _, r := range renewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(r.url, r.pin, client.Options{Timeout: 5 * time.Second})
			for ctx.Err() == nil {
				if _, err := r.renew(ctx, c); err != nil {
					continue
				}
				r.ok++
				renewed.Add(1)
			}
		}()
	}
	// Once the renewal storm is under way, 50 clients race for the token and the service
	// is killed while they are in flight.
	// Each host may renew twice early (authority.RenewBurst); the kill comes while they do.
	for deadline := time.Now().Add(20 * time.Second); renewed.Load() < 8 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := client.Enroll(ctx, raceTok, client.Options{Timeout: 5 * time.Second}); err == nil {
				enrolled.Add(1)
			}
		}()
	}
	time.Sleep(80 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()

	p = startServe(t, bin, config)
	_, err := client.Enroll(context.Background(), raceTok, client.Options{})
	t.Logf("enrolling with the raced token after the restart: %v", err)
	switch {
	case err == nil:
		if enrolled.Load() != 0 {
			t.Fatal("token enrolled before the kill and again after it")
		}
	case errors.Is(err, authority.ErrTokenUsed):
		if enrolled.Load() > 1 {
			t.Fatalf("%d enrollments succeeded with one token", enrolled.Load())
		}
	default:
		t.Fatalf("enroll after restart: %v", err)
	}
	renewals := 0
	for i, r := range renewers {
		renewals += r.ok
		c := client.New(r.url, r.pin, client.Options{})
		// Having used its early renewals, a host is told to wait (ErrRenewLimited, judged
		// only for a host's current cert); nothing may make it a fork or a replay.
		if _, err := r.renew(context.Background(), c); err != nil && !errors.Is(err, authority.ErrRenewLimited) {
			t.Errorf("host %d cannot renew after the restart: %v", i, err)
		}
	}
	t.Logf("%d enrollments and %d renewals answered before the kill", enrolled.Load(), renewals)
	if renewals == 0 {
		t.Error("no renewal happened before the kill: the storm did not run")
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	st, err := authority.OpenBolt(filepath.Join(dir, "state", "ca.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.View(func(tx authority.Tx) error {
		certs, _ := tx.Certs()
		audit, _ := tx.Audit()
		issued := map[string]bool{}
		seenCounter := map[string]bool{}
		for _, e := range audit {
			if e.Action != "enroll" && e.Action != "renew" {
				continue
			}
			if issued[e.Fingerprint] {
				t.Errorf("fingerprint %s audited twice", e.Fingerprint)
			}
			issued[e.Fingerprint] = true
			if e.Action == "renew" {
				c := e.Host + " " + strings.Fields(e.Detail)[1]
				if seenCounter[c] {
					t.Errorf("renewal %s accepted twice", c)
				}
				seenCounter[c] = true
			}
		}
		if len(certs) != len(issued) {
			t.Errorf("%d certs on record, %d issuances audited", len(certs), len(issued))
		}
		raceCerts := 0
		for _, c := range certs {
			if !issued[c.Fingerprint] {
				t.Errorf("cert %s issued without an audit record", c.Fingerprint)
			}
			if c.Host == "race" {
				raceCerts++
			}
		}
		if raceCerts != 1 {
			t.Errorf("%d certs for the raced token, want 1", raceCerts)
		}
		hosts, _ := tx.Hosts()
		if len(hosts) != 9 {
			t.Errorf("%d hosts after the crash, want 9", len(hosts))
		}
		return nil
	})
	if strings.Contains(p.logs.String(), raceTok) {
		t.Error("service logged the token")
	}
}
