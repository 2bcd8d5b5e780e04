package main

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
	"github.com/meshnode/meshnode/overlay"
)

var testLighthouses = []api.Lighthouse{{VpnIP: netip.MustParseAddr("10.42.0.1"), Addrs: []string{"198.18.0.1:4242"}}}

func runEnroll(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(append([]string{"enroll"}, args...), &out, &out)
	return code, out.String()
}

func TestEnrollWritesKeyCertBundleAndANewConfig(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := filepath.Join(t.TempDir(), "etc", "meshnode") // does not exist yet
	cfgPath := filepath.Join(dir, "node.yml")
	code, out := runEnroll(t, "-token", s.Invite(t, "web1", "10.42.0.5"), "-config", cfgPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	t.Log(out)
	for _, want := range []string{"enrolling with the CA service at " + s.URL, "enrolled as web1, 10.42.0.5/16", "created " + cfgPath, "done: start the node with: meshnode -config " + cfgPath} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("config warnings: %v", cfg.Warnings)
	}
	want := map[string]string{"ca": filepath.Join(dir, "ca.crt"), "cert": filepath.Join(dir, "host.crt"), "key": filepath.Join(dir, "host.key")}
	if cfg.PKI.CA != want["ca"] || cfg.PKI.Cert != want["cert"] || cfg.PKI.Key != want["key"] {
		t.Errorf("pki = %+v, want %v", cfg.PKI, want)
	}
	for path, perm := range map[string]os.FileMode{cfg.PKI.Key: 0o600, cfg.PKI.Cert: 0o644, cfg.PKI.CA: 0o644, cfgPath: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), perm)
		}
	}
	p, err := overlay.LoadPKI(cfg, s.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Creds.Cert; c.Details.Name != "web1" || c.VpnIP() != netip.MustParseAddr("10.42.0.5") {
		t.Errorf("cert %s %s", c.Details.Name, c.VpnIP())
	}
	if cfg.Renewal.URL != s.URL || cfg.Renewal.Pin != hex.EncodeToString(s.Pin) ||
		cfg.Renewal.ServiceKey != hex.EncodeToString(s.A.ServicePublicKey()) {
		t.Errorf("renewal = %+v", cfg.Renewal)
	}
	if got := cfg.StaticHostMap["10.42.0.1"]; !slices.Equal(got, []string{"198.18.0.1:4242"}) {
		t.Errorf("static_host_map[10.42.0.1] = %v", got)
	}
	if !slices.Equal(cfg.Lighthouse.Hosts, []string{"10.42.0.1"}) || cfg.Lighthouse.AmLighthouse {
		t.Errorf("lighthouse = %+v", cfg.Lighthouse)
	}
	// Issue 15: the lighthouses are the host's relays, for NATs hole punching cannot cross.
	if !slices.Equal(cfg.Relay.Relays, []string{"10.42.0.1"}) || cfg.Relay.AmRelay {
		t.Errorf("relay = %+v, want the lighthouses as relays", cfg.Relay)
	}
}

func TestEnrollUpdatesAnExistingConfigAndKeepsTheRest(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	orig := `# my settings
pki:
  ca: pki/my-ca.crt
  cert: pki/me.crt
  key: pki/me.key
static_host_map:
  "10.42.0.9": ["198.18.0.9:4242"]
lighthouse:
  hosts: ["10.42.0.9"]
listen:
  host: 0.0.0.0
  port: 5555   # keep me
tun:
  dev: mytun
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
renewal:
  at: 0.5
`
	if err := os.WriteFile(cfgPath, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out := runEnroll(t, "-token", s.Invite(t, "web1", "10.42.0.7"), "-config", cfgPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PKI.Key != filepath.Join(dir, "pki", "me.key") || cfg.PKI.CA != filepath.Join(dir, "pki", "my-ca.crt") {
		t.Errorf("pki paths %+v: want the config's names, resolved beside it", cfg.PKI)
	}
	if cfg.Listen.Port != 5555 || cfg.Tun.Dev != "mytun" || cfg.Renewal.At != 0.5 {
		t.Errorf("settings lost: port %d dev %s at %v", cfg.Listen.Port, cfg.Tun.Dev, cfg.Renewal.At)
	}
	if !slices.Equal(cfg.Lighthouse.Hosts, []string{"10.42.0.9", "10.42.0.1"}) || len(cfg.StaticHostMap) != 2 {
		t.Errorf("lighthouses %v, static %v", cfg.Lighthouse.Hosts, cfg.StaticHostMap)
	}
	if !slices.Equal(cfg.Relay.Relays, []string{"10.42.0.9", "10.42.0.1"}) {
		t.Errorf("relay.relays = %v, want every lighthouse", cfg.Relay.Relays)
	}
	b, _ := os.ReadFile(cfgPath)
	if !strings.Contains(string(b), "# my settings") || !strings.Contains(string(b), "keep me") {
		t.Errorf("comments lost:\n%s", b)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o640 {
		t.Errorf("config mode changed to %v", st.Mode().Perm())
	}
	if _, err := overlay.LoadPKI(cfg, s.Clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollOfALighthouseMakesItOne(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	cfgPath := filepath.Join(t.TempDir(), "lighthouse.yml")
	code, out := runEnroll(t, "-token", s.Invite(t, "lighthouse1", "10.42.0.1"), "-config", cfgPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Lighthouse.AmLighthouse || len(cfg.Lighthouse.Hosts) != 0 || len(cfg.StaticHostMap) != 0 {
		t.Errorf("lighthouse %+v static %v", cfg.Lighthouse, cfg.StaticHostMap)
	}
}

func TestEnrollRefusesToOverwriteKeysWithoutForceAndKeepsTheTokenUnspent(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	if code, out := runEnroll(t, "-token", s.Invite(t, "web1", ""), "-config", cfgPath); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(dir, "host.key"))
	tok := s.Invite(t, "web2", "")
	before := s.Reqs.Load()
	code, out := runEnroll(t, "-token", tok, "-config", cfgPath)
	if code == 0 || !strings.Contains(out, "already exists") || !strings.Contains(out, "-force") {
		t.Fatalf("second enroll: exit %d\n%s", code, out)
	}
	if s.Reqs.Load() != before {
		t.Fatal("the service was contacted although the files could not be written")
	}
	if k, _ := os.ReadFile(filepath.Join(dir, "host.key")); !bytes.Equal(k, keyBefore) {
		t.Fatal("key replaced without -force")
	}
	// -pki-dir elsewhere works with the same token; -force replaces in place.
	other := filepath.Join(t.TempDir(), "pki")
	code, out = runEnroll(t, "-token", tok, "-config", filepath.Join(dir, "other.yml"), "-pki-dir", other)
	if code != 0 {
		t.Fatalf("enroll with -pki-dir: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(other, "host.key")); err != nil {
		t.Fatal(err)
	}
	if code, out := runEnroll(t, "-token", s.Invite(t, "web3", ""), "-config", cfgPath, "-force"); code != 0 {
		t.Fatalf("-force: exit %d\n%s", code, out)
	}
	if k, _ := os.ReadFile(filepath.Join(dir, "host.key")); bytes.Equal(k, keyBefore) {
		t.Fatal("-force kept the old key")
	}
}

func TestEnrollErrorsSayWhatToDoNext(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	used := s.Invite(t, "used", "")
	if code, out := runEnroll(t, "-token", used, "-config", filepath.Join(t.TempDir(), "n.yml")); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	wrongPin, _ := authority.ParseToken(s.Invite(t, "pinned", ""))
	wrongPin.Pin = bytes.Repeat([]byte{7}, 32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	unreachable, _ := authority.ParseToken(s.Invite(t, "far", ""))
	unreachable.URL = "https://" + deadAddr
	late := s.Invite(t, "late", "")

	cases := []struct {
		name, token string
		before      func()
		want        []string
	}{
		{"malformed", "mesh1.nonsense", nil, []string{"malformed enrollment token", "copy the whole line"}},
		{"used", used, nil, []string{"already used", "ask the admin for a new invite"}},
		{"wrong pin", wrongPin.String(), nil, []string{"does not match the pinned fingerprint", "nothing was sent"}},
		{"unreachable", unreachable.String(), nil, []string{"cannot reach the CA service at https://" + deadAddr, "token is still unused"}},
		{"expired", late, func() { s.Clock.Advance(authority.DefaultTokenTTL + time.Second) }, []string{"expired", "ask the admin for a new invite"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			dir := t.TempDir()
			code, out := runEnroll(t, "-token", c.token, "-config", filepath.Join(dir, "node.yml"), "-timeout", "4s")
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "host.key")); err == nil {
				t.Error("a key file was left behind")
			}
			if _, err := os.Stat(filepath.Join(dir, "node.yml")); err == nil {
				t.Error("a config was written")
			}
		})
	}
	if code, _ := runEnroll(t, "-config", "x.yml"); code != 2 {
		t.Errorf("no token: exit %d, want 2", code)
	}
}

func TestEnrollTokenFromFile(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	if err := cert.WriteFileAtomic(tf, []byte(s.Invite(t, "web1", "")+"\n"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	if code, out := runEnroll(t, "-token-file", tf, "-config", filepath.Join(dir, "node.yml")); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestEnrollMakesLighthousesRelaysAndKeepsAHandWrittenRelaySection: issue 15. A host on the
// CA service's lighthouse list becomes a relay too; a config that already has a relay
// section keeps it as written.
func TestEnrollMakesLighthousesRelaysAndKeepsAHandWrittenRelaySection(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	dir := t.TempDir()
	lhPath := filepath.Join(dir, "lh.yml")
	if code, out := runEnroll(t, "-token", s.Invite(t, "lighthouse1", "10.42.0.1"), "-config", lhPath); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	cfg, err := overlay.LoadConfig(lhPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Lighthouse.AmLighthouse || !cfg.Relay.AmRelay || len(cfg.Relay.Relays) != 0 {
		t.Errorf("lighthouse %+v relay %+v: want a lighthouse that relays", cfg.Lighthouse, cfg.Relay)
	}
	hdir := t.TempDir()
	hostPath := filepath.Join(hdir, "host.yml")
	own := "relay:\n  use_relays: false\n"
	if err := os.WriteFile(hostPath, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runEnroll(t, "-token", s.Invite(t, "web1", "10.42.0.8"), "-config", hostPath); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if cfg, err = overlay.LoadConfig(hostPath); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Relay.Relays) != 0 || cfg.Relay.UseRelays == nil || *cfg.Relay.UseRelays {
		t.Errorf("relay = %+v: the hand-written section was changed", cfg.Relay)
	}
}
