package authority_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

// writeConfigDir copies testdata/ca.yml next to a fresh CA, as an admin would set it up.
func writeConfigDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/ca.yml")
	if err != nil {
		t.Fatal(err)
	}
	ca := certtest.NewCA(t, "ca", certtest.WithIPs("10.42.0.0/16"))
	for name, data := range map[string][]byte{"ca.yml": b, "ca.crt": ca.PEM, "ca.key": ca.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ca.yml")
}

func TestExampleConfigOpensAService(t *testing.T) {
	path := writeConfigDir(t)
	c, err := authority.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Durations.Cert != 720*time.Hour || c.Enroll.Burst != 5 || len(c.LighthouseList()) != 1 {
		t.Errorf("config = %+v", c)
	}
	svc, err := c.Open(nil, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	tr, err := svc.Authority.Tree()
	if err != nil || strings.Join(tr.Children("mesh"), ",") != "servers,humans" {
		t.Fatalf("tree from config: %v", err)
	}
	tok, _, err := svc.Authority.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := authority.ParseToken(tok)
	if err != nil || parsed.URL != "https://127.0.0.1:8443" || string(parsed.Pin) != string(svc.TLS.Pin) {
		t.Errorf("token %+v, %v", parsed, err)
	}
	// A second opener finds the store locked.
	if _, err := c.Open(nil, nil, 50*time.Millisecond); !errors.Is(err, authority.ErrStoreLocked) {
		t.Errorf("second Open = %v, want ErrStoreLocked", err)
	}
	for _, f := range []string{"tls.pem", "service.key", "ca.db"} {
		st, err := os.Stat(filepath.Join(filepath.Dir(path), "state", f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", f, err, st.Mode())
		}
	}
}

func TestLoadConfigReportsEveryProblemWithItsKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.yml")
	os.WriteFile(path, []byte(`
listen: nope
url: http://x
lighthouses:
  - vpn_ip: 10.42.0.300
    addrs: ["nope"]
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers: {cidr: 10.43.0.0/24}
`), 0o600)
	_, err := authority.LoadConfig(path)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, key := range []string{"listen:", "url:", "ca:", "lighthouses[0].vpn_ip", "lighthouses[0].addrs[0]", "cidrs.mesh.children.servers.cidr"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
	os.WriteFile(path, []byte("listen: 127.0.0.1:1\nbogus: 1\n"), 0o600)
	if _, err := authority.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestAdminSocketServesTheAuthority(t *testing.T) {
	f := newFixture(t)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := authority.ListenAdmin(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, %v", st.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- authority.ServeAdmin(ctx, ln, f.a, nil) }()
	defer func() { cancel(); <-done }()
	if _, err := authority.ListenAdmin(sock); err == nil {
		t.Error("a second service took over a live admin socket")
	}
	ac, err := authority.DialAdmin(sock)
	if err != nil {
		t.Fatal(err)
	}
	tok, id, err := ac.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers", Groups: []string{"web"}})
	if err != nil || id.IP.String() != "10.42.0.2/16" {
		t.Fatalf("Invite = %v, %v", id, err)
	}
	parsed, _ := authority.ParseToken(tok)
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(parsed.Secret, pub); err != nil {
		t.Fatalf("token from the admin socket: %v", err)
	}
	if _, _, err := ac.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"}); !errors.Is(err, authority.ErrNameTaken) {
		t.Errorf("duplicate invite over the socket = %v, want ErrNameTaken", err)
	}
	inv, err := ac.Inventory()
	if err != nil || len(inv.Hosts) != 1 || len(inv.CIDRs) != 3 {
		t.Errorf("Inventory = %+v, %v", inv, err)
	}
	if res, err := ac.Revoke("web1"); err != nil || res.Version != 1 {
		t.Errorf("Revoke = %+v, %v", res, err)
	}
	if _, err := ac.Revoke("nobody"); !errors.Is(err, authority.ErrNotFound) {
		t.Errorf("Revoke(nobody) = %v", err)
	}
	if es, err := ac.Audit(); err != nil || len(es) != 3 || es[2].Action != "revoke" {
		t.Errorf("Audit over the socket = %+v, %v; want invite, enroll, revoke", es, err)
	}
	// A stale socket file (nobody listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l2, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	l3, err := authority.ListenAdmin(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l3.Close()
}

// TestAdminSocketIsBoundWhereOnlyTheOwnerCanReachIt: the socket never exists at its path
// with the umask's mode: it is bound in a private directory, set to 0600 and moved into
// place (on main it was bound at its path and chmod-ed after).
func TestAdminSocketIsBoundWhereOnlyTheOwnerCanReachIt(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := authority.ListenAdmin(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("admin socket mode %v, want a 0600 socket", st.Mode())
	}
	if bound := ln.Addr().String(); bound == path {
		t.Errorf("bound at %s itself: it was reachable with mode %#o until the chmod", path, 0o777)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestConfigDualStackCIDRs(t *testing.T) {
	path := writeConfigDir(t)
	b, _ := os.ReadFile(path)
	good := strings.Replace(string(b), "cidrs:\n", `cidrs:
  dual:
    cidr: 10.50.0.0/16
    cidr6: fd50::/48
    children:
      lan: {cidr: 10.50.1.0/24, cidr6: "fd50:0:0:1::/64"}
  six:
    cidr: fd60::/64
`, 1)
	os.WriteFile(path, []byte(good), 0o600)
	c, err := authority.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, cd := range c.ConfigCIDRs() {
		got[cd.Name] = cd.String()
	}
	if got["dual"] != "10.50.0.0/16,fd50::/48" || got["lan"] != "10.50.1.0/24,fd50:0:0:1::/64" || got["six"] != "fd60::/64" {
		t.Errorf("CIDRs = %v", got)
	}
	bad := strings.Replace(good, `cidr6: "fd50:0:0:1::/64"`, `cidr6: "fd51::/64"`, 1)
	os.WriteFile(path, []byte(bad), 0o600)
	if _, err := authority.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "cidrs.dual.children.lan.cidr6") {
		t.Errorf("an IPv6 child outside its parent: %v", err)
	}
}
