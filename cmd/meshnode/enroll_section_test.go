package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
	"github.com/meshnode/meshnode/overlay"
)

// syncBuffer is a bytes.Buffer the daemon's logger and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// enrollSectionConfig is a node config as an admin would ship it: pki paths that do not
// exist yet, an enroll section, and settings the CA service does not decide. The node runs
// without a TUN device on loopback, so the test needs no root.
func enrollSectionConfig(dir, enrollYAML string) string {
	return fmt.Sprintf(`pki:
  ca: %s
  cert: %s
  key: %s
%s
listen:
  host: 127.0.0.1
  port: 0
tun:
  disabled: true
control:
  path: %s
logging:
  level: info
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: icmp, host: any}]
`, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "host.crt"), filepath.Join(dir, "host.key"), enrollYAML,
		filepath.Join(dir, "meshnode.sock"))
}

func writeConfig(t *testing.T, path, y string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
}

// daemonRun is one run of `meshnode -config X` in this process.
type daemonRun struct {
	log  *syncBuffer
	out  *syncBuffer
	code chan int
}

func startDaemon(t *testing.T, cfgPath string) *daemonRun {
	t.Helper()
	d := &daemonRun{log: &syncBuffer{}, out: &syncBuffer{}, code: make(chan int, 1)}
	go func() { d.code <- run([]string{"-config", cfgPath}, d.out, d.log) }()
	return d
}

// waitStarted waits for the daemon's "meshnode started" line, which it logs once its
// signal handler is installed, or for it to exit.
func (d *daemonRun) waitStarted(t *testing.T) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(d.log.String(), "meshnode started") {
		select {
		case code := <-d.code:
			t.Fatalf("the daemon exited with %d before it started:\n%s", code, d.log.String())
		case <-deadline:
			t.Fatalf("the daemon did not start within 60 s:\n%s", d.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the daemon as systemd would (SIGTERM, caught by the daemon's handler) and
// returns its exit status.
func (d *daemonRun) stop(t *testing.T) int {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-d.code:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not stop within 30 s:\n%s", d.log.String())
		return -1
	}
}

// wait returns the exit status of a daemon that is expected to end on its own.
func (d *daemonRun) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case code := <-d.code:
		return code
	case <-time.After(within):
		t.Fatalf("the daemon did not exit within %s:\n%s", within, d.log.String())
		return -1
	}
}

func TestDaemonEnrollsFromTheConfigSectionThenRunsAndDoesNotEnrollTwice(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	tok := s.Invite(t, "web1", "10.42.0.5")
	writeConfig(t, cfgPath, enrollSectionConfig(dir, "enroll:\n  token: "+tok+"\n"))

	// -test checks the section and says what the start will do, without spending the token.
	code, out, errOut := runCLI("-config", cfgPath, "-test")
	if code != 0 || !strings.Contains(out, "no pki files yet: the daemon will enroll at start with the CA service at "+s.URL) {
		t.Fatalf("-test before enrollment: exit %d\n%s%s", code, out, errOut)
	}
	before := s.Reqs.Load()
	if before != 0 {
		t.Fatalf("-test contacted the CA service (%d requests)", before)
	}

	d := startDaemon(t, cfgPath)
	d.waitStarted(t)
	log := d.log.String()
	for _, want := range []string{"no pki files yet: enrolling with the token of the enroll section",
		"enrolling with the CA service at " + s.URL, "enrolled as web1, 10.42.0.5/16", "wrote " + filepath.Join(dir, "host.key"),
		"automatic key handling", "meshnode started", "host=web1"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(log, "done: start the node with") {
		t.Error("the daemon tells the user to start it")
	}
	// Running: the control socket answers with the enrolled identity.
	code, out, errOut = runCLI("status", "-control", filepath.Join(dir, "meshnode.sock"))
	if code != 0 || !strings.Contains(out, "web1 10.42.0.5") {
		t.Errorf("status of the enrolled node: exit %d\n%s%s", code, out, errOut)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, d.log.String())
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Renewal.URL != s.URL || cfg.Enroll.Token != tok || cfg.StaticHostMap["10.42.0.1"] == nil {
		t.Errorf("config after enrollment: renewal %+v, enroll %+v, static_host_map %v", cfg.Renewal, cfg.Enroll, cfg.StaticHostMap)
	}
	keyBefore, err := os.ReadFile(cfg.PKI.Key)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := s.A.Hosts()
	if err != nil || len(hosts) != 1 || hosts[0].Fingerprint == "" {
		t.Fatalf("inventory after the first start: %+v (%v)", hosts, err)
	}
	issued := hosts[0].Fingerprint

	// A restart with the pki files present leaves the spent token alone: it starts while the
	// CA service is down (an enrollment attempt would wait for it and never start).
	code, out, errOut = runCLI("-config", cfgPath, "-test")
	if code != 0 || !strings.Contains(out, "config OK (host web1, 10.42.0.5)") || !strings.Contains(out, "enroll section is ignored") {
		t.Fatalf("-test after enrollment: exit %d\n%s%s", code, out, errOut)
	}
	s.Down.Store(true)
	d = startDaemon(t, cfgPath)
	d.waitStarted(t)
	if !strings.Contains(d.log.String(), "the pki files exist: the enroll section is ignored") {
		t.Errorf("no info line about the ignored section:\n%s", d.log.String())
	}
	if strings.Contains(d.log.String(), "enrolling with") {
		t.Errorf("the restart tried to enroll:\n%s", d.log.String())
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, d.log.String())
	}
	if k, _ := os.ReadFile(cfg.PKI.Key); !bytes.Equal(k, keyBefore) {
		t.Error("the restart replaced the key")
	}
	if hosts, _ := s.A.Hosts(); len(hosts) != 1 || hosts[0].Fingerprint != issued {
		t.Errorf("inventory after the restart: %+v", hosts)
	}
	audit, err := s.A.Audit()
	if err != nil {
		t.Fatal(err)
	}
	enrolls := 0
	for _, e := range audit {
		if e.Action == "enroll" {
			enrolls++
		}
	}
	if enrolls != 1 {
		t.Errorf("%d enrollments in the audit log, want 1", enrolls)
	}
}

func TestDaemonEnrollsWithATokenFile(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	if err := cert.WriteFileAtomic(tf, []byte(s.Invite(t, "db1", "10.42.0.8")+"\n"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "node.yml")
	writeConfig(t, cfgPath, enrollSectionConfig(dir, "enroll:\n  token_file: "+tf+"\n  timeout: 30s\n"))
	if code, out, errOut := runCLI("-config", cfgPath, "-test"); code != 0 || !strings.Contains(out, "will enroll at start") {
		t.Fatalf("-test: exit %d\n%s%s", code, out, errOut)
	}
	d := startDaemon(t, cfgPath)
	d.waitStarted(t)
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, d.log.String())
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := overlay.LoadPKI(cfg, s.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p.Creds.Cert.Details.Name != "db1" {
		t.Errorf("enrolled as %s", p.Creds.Cert.Details.Name)
	}
	if b, _ := os.ReadFile(cfgPath); bytes.Contains(b, []byte("mesh1.")) {
		t.Error("the token was copied into the config")
	}
}

func TestDaemonWithASpentOrBadTokenSaysWhatToDoAndWritesNothing(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	spent := s.Invite(t, "used", "")
	if code, out := runEnroll(t, "-token", spent, "-config", filepath.Join(t.TempDir(), "n.yml")); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	late := s.Invite(t, "late", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // accepts nothing: a service that never answers

	cases := []struct {
		name, enroll string
		before       func()
		code         int
		want         []string
	}{
		{"spent", "enroll:\n  token: " + spent + "\n", nil, 1,
			[]string{"enrollment failed", "already used", "ask the admin for a new invite"}},
		{"expired", "enroll:\n  token: " + late + "\n", func() { s.Clock.Advance(2 * 24 * time.Hour) }, 1,
			[]string{"expired", "ask the admin for a new invite"}},
		{"malformed", "enroll:\n  token: mesh1.nonsense\n", nil, 1,
			[]string{"enroll.token: malformed enrollment token", "copy the whole line"}},
		{"missing token file", "enroll:\n  token_file: /nonexistent/token\n", nil, 1,
			[]string{"enroll.token_file", "no such file"}},
		{"both", "enroll:\n  token: " + late + "\n  token_file: /x\n", nil, 1,
			[]string{"enroll: set token or token_file, not both"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "node.yml")
			y := enrollSectionConfig(dir, c.enroll)
			writeConfig(t, cfgPath, y)
			d := startDaemon(t, cfgPath)
			if code := d.wait(t, 60*time.Second); code != c.code {
				t.Fatalf("exit %d, want %d\n%s", code, c.code, d.log.String())
			}
			for _, w := range c.want {
				if !strings.Contains(d.log.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, d.log.String())
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("files left in the directory: %v", ents)
			}
			if b, _ := os.ReadFile(cfgPath); string(b) != y {
				t.Error("the config was changed")
			}
		})
	}
	t.Run("unreachable service gives up after the timeout", func(t *testing.T) {
		tok := s.Invite(t, "far", "")
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "node.yml")
		// The same token pointed at a port that accepts connections but never answers TLS.
		writeConfig(t, cfgPath, enrollSectionConfig(dir, "enroll:\n  token: "+retarget(t, tok, "https://"+ln.Addr().String())+"\n  timeout: 4s\n"))
		start := time.Now()
		d := startDaemon(t, cfgPath)
		if code := d.wait(t, 60*time.Second); code != 1 {
			t.Fatalf("exit %d\n%s", code, d.log.String())
		}
		if el := time.Since(start); el < 3*time.Second {
			t.Errorf("gave up after %s, before enroll.timeout", el)
		}
		if !strings.Contains(d.log.String(), "cannot reach the CA service") {
			t.Errorf("no explanation:\n%s", d.log.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("files left: %v", ents)
		}
	})
}

func TestDaemonWaitsForTheCAServiceWithBackoff(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	s.Down.Store(true) // 503 to everything, as an overloaded service or its proxy would
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	writeConfig(t, cfgPath, enrollSectionConfig(dir, "enroll:\n  token: "+s.Invite(t, "web1", "")+"\n  timeout: 60s\n"))
	d := startDaemon(t, cfgPath)
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(d.log.String(), "retrying in") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two retries logged within 30 s:\n%s", d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Down.Store(false)
	d.waitStarted(t)
	log := d.log.String()
	for _, want := range []string{"attempt 1: CA service: 503 Service Unavailable; retrying in 1s (giving up after 1m0s)",
		"attempt 2: CA service: 503 Service Unavailable; retrying in 2s", "enrolled as web1"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, d.log.String())
	}
}

func TestDaemonRefusesAHalfPresentPKIWithAnEnrollSection(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	writeConfig(t, cfgPath, enrollSectionConfig(dir, "enroll:\n  token: "+s.Invite(t, "web1", "")+"\n"))
	writeConfig(t, filepath.Join(dir, "host.key"), "a key that may still be in use")
	code, _, errOut := runCLI("-config", cfgPath)
	if code != 1 || !strings.Contains(errOut, "pki.key "+filepath.Join(dir, "host.key")+" exist(s) but") || !strings.Contains(errOut, "restore the missing") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if code, _, errOut := runCLI("-config", cfgPath, "-test"); code != 1 || !strings.Contains(errOut, "exist(s) but") {
		t.Fatalf("-test: exit %d\n%s", code, errOut)
	}
	if s.Reqs.Load() != 0 {
		t.Error("the CA service was contacted")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "host.key")); string(b) != "a key that may still be in use" {
		t.Error("the key was replaced")
	}
}

func TestEnrollSectionConfigIsValidated(t *testing.T) {
	const pki = "pki:\n  ca: ca.crt\n  cert: host.crt\n  key: host.key\n"
	for y, want := range map[string]string{
		pki + "enroll:\n  token: a\n  token_file: b\n":                                         "enroll: set token or token_file, not both",
		pki + "enroll:\n  token: a\n  timeout: -1s\n":                                          "enroll.timeout: -1s is negative",
		pki + "enroll:\n  tokn: a\n":                                                           "enroll.tokn",
		"pki:\n  ca: ca.crt\n  cert: host.crt\n  key: \"-----BEGIN X\"\nenroll:\n  token: a\n": "pki.key: the enroll section writes this file",
	} {
		_, err := overlay.ParseConfig([]byte(y), "node.yml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", y, err, want)
		}
	}
	cfg, err := overlay.ParseConfig([]byte(pki+"enroll:\n  token_file: t\n"), "node.yml")
	if err != nil || cfg.Enroll.Timeout != overlay.DefaultEnrollTimeout {
		t.Errorf("default timeout %v (%v)", cfg.Enroll.Timeout, err)
	}
}

// retarget is tok naming another service URL (same pin and secret).
func retarget(t *testing.T, tok, url string) string {
	t.Helper()
	p, err := authority.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	p.URL = url
	return p.String()
}
