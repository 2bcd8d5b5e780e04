package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
)

// caService sets up a CA made by `mesh-cert ca` at now and a ca.yml listening on listen.
func caService(t *testing.T, now time.Time, listen string) (dir, config string) {
	t.Helper()
	dir = t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, now, "ca", "-name", "Acme", "-ips", "10.42.0.0/16", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	yml := `listen: ` + listen + `
state_dir: state
ca:
  - {crt: ca.crt, key: ca.key}
lighthouses:
  - {vpn_ip: 10.42.0.1, addrs: ["127.0.0.1:4242"]}
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers: {cidr: 10.42.0.0/24}
      humans: {cidr: 10.42.100.0/24}
durations: {cert: 1h}
enroll: {rate: -1}
`
	if err := os.WriteFile(p("ca.yml"), []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, p("ca.yml")
}

var tokenRE = regexp.MustCompile(`token:\s+(mesh1\.\S+)`)

func inviteToken(t *testing.T, out string) string {
	t.Helper()
	m := tokenRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in %q", out)
	}
	return m[1]
}

func TestInviteListRevokeWithServeStopped(t *testing.T) {
	_, config := caService(t, fixedNow, "127.0.0.1:0")
	r := mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1", "-groups", "web"))
	if !strings.Contains(r.stdout, "ip:     10.42.0.2/16 (next free in servers)") {
		t.Errorf("invite output: %q", r.stdout)
	}
	if _, err := authority.ParseToken(inviteToken(t, r.stdout)); err != nil {
		t.Fatal(err)
	}
	r = mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "humans", "-name", "laptop", "-ip", "10.42.100.7", "-ttl", "1h"))
	if !strings.Contains(r.stdout, "10.42.100.7/16 (chosen)") {
		t.Errorf("invite -ip output: %q", r.stdout)
	}
	// Inviting a name that has not enrolled yet again replaces the invite (and its token).
	r = mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1", "-groups", "web,ssh"))
	if !strings.Contains(r.stdout, "ip:     10.42.0.2/16") {
		t.Errorf("re-invite moved the host: %q", r.stdout)
	}
	if r := meshCert(t, fixedNow, "invite", "-config", config, "-name", "x"); r.code != 2 {
		t.Errorf("invite without -cidr: exit %d", r.code)
	}

	// -cidr NAME=PREFIX adds a CIDR to the tree; a prefix that clashes is refused.
	mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "db=10.42.0.128/25", "-name", "db1"))
	if r := meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "db=10.42.7.0/24", "-name", "db2"); r.code != 1 {
		t.Errorf("redefining a CIDR: %+v", r)
	}
	r = mustOK(t, meshCert(t, fixedNow, "list", "-config", config, "-tree"))
	want := []string{
		"mesh 10.42.0.0/16",
		"  servers 10.42.0.0/24",
		"    - web1 10.42.0.2/16 groups=web,ssh invited",
		"    db 10.42.0.128/25",
		"      - db1 10.42.0.129/16 invited",
		"  humans 10.42.100.0/24",
		"    - laptop 10.42.100.7/16 invited",
	}
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); !slices.Equal(got, want) {
		t.Errorf("list --tree:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}

	r = mustOK(t, meshCert(t, fixedNow, "revoke", "-config", config, "laptop"))
	audit := mustOK(t, meshCert(t, fixedNow, "list", "-config", config, "-audit")).stdout
	var actions []string
	for _, l := range strings.Split(strings.TrimSpace(audit), "\n") {
		actions = append(actions, strings.Split(l, "\t")[2])
	}
	if !slices.Equal(actions, []string{"invite", "invite", "invite", "cidr", "invite", "revoke"}) {
		t.Errorf("audit actions %v from:\n%s", actions, audit)
	}
	if !strings.Contains(r.stdout, "revoked host laptop") {
		t.Errorf("revoke output %q", r.stdout)
	}
	if r := meshCert(t, fixedNow, "revoke", "-config", config, "nobody"); r.code != 1 || !strings.Contains(r.stderr, "no such host") {
		t.Errorf("revoke nobody: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "invite.token")
	mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "db9", "-out", out))
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("invite file mode %v", st.Mode())
	}
	if _, err := authority.ParseToken(string(b)); err != nil {
		t.Errorf("invite file: %v", err)
	}
}

// lockedBuffer is an io.Writer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestServeEnrollsInvitedHostsAndAdminCommandsUseTheSocket(t *testing.T) {
	_, config := caService(t, fixedNow, "127.0.0.1:0")
	logs := &lockedBuffer{}
	e := &env{stdout: logs, stderr: logs, now: func() time.Time { return fixedNow }}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, e, config, func(a string) { addr <- a }) }()
	select {
	case <-addr:
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve returned %v", err)
			}
		}
	}
	defer stop()

	// The store is held by serve: invite goes through the admin socket.
	r := mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1", "-groups", "web"))
	tok := inviteToken(t, r.stdout)
	en, err := client.Enroll(context.Background(), tok, client.Options{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, logs.String())
	}
	if en.Cert.Details.Name != "web1" || en.Cert.Details.Ips[0].String() != "10.42.0.2/16" {
		t.Errorf("enrolled cert %+v", en.Cert.Details)
	}
	if r := meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1"); r.code != 1 || !strings.Contains(r.stderr, "already taken") {
		t.Errorf("invite of an enrolled name: %+v", r)
	}
	r = mustOK(t, meshCert(t, fixedNow, "list", "-config", config, "--tree"))
	if !strings.Contains(r.stdout, "- web1 10.42.0.2/16 groups=web enrolled expires=") || !strings.Contains(r.stdout, "renewed=never") {
		t.Errorf("list after enroll:\n%s", r.stdout)
	}
	mustOK(t, meshCert(t, fixedNow, "revoke", "-config", config, "web1"))
	pool, _ := cert.NewPoolFromPEMWithClock(en.CABundle, func() time.Time { return fixedNow })
	bl, err := client.New(en.URL, en.Pin, client.Options{}).FetchBlocklist(context.Background(), pool)
	if err != nil || !slices.Contains(bl.Fingerprints, en.Cert.Fingerprint()) {
		t.Errorf("blocklist after revoke: %+v, %v", bl, err)
	}
	if strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), string(en.KeyPEM)) {
		t.Error("the service logged the token or the key")
	}
	stop()
	// With serve stopped, the commands open the store directly and see the same state.
	r = mustOK(t, meshCert(t, fixedNow, "list", "-config", config))
	if !strings.Contains(r.stdout, "web1\t10.42.0.2/16 groups=web revoked") {
		t.Errorf("list after restart: %q", r.stdout)
	}
}
