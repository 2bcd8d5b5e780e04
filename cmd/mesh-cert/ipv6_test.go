package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInviteIPv6AndListTree: ca.yml networks may be IPv6 or dual-stack; invite allocates in
// each family (or takes -ip of either) and list --tree shows the v6 networks and addresses.
func TestInviteIPv6AndListTree(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	// No -ips: a v1 CA cannot limit IPv6 networks, and a limit of IPv4 ones only would refuse them.
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "Acme", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	yml := `listen: 127.0.0.1:0
state_dir: state
ca:
  - {crt: ca.crt, key: ca.key}
lighthouses:
  - {vpn_ip: 10.42.0.1, addrs: ["127.0.0.1:4242"]}
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    cidr6: fd42::/48
    children:
      servers: {cidr: 10.42.0.0/24, cidr6: "fd42::/64"}
      legacy: {cidr: 10.42.9.0/24}
  six:
    cidr: fd60::/64
durations: {cert: 1h}
`
	if err := os.WriteFile(p("ca.yml"), []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	config := p("ca.yml")
	r := mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1"))
	if !strings.Contains(r.stdout, "ip:     10.42.0.2/16 (next free in servers)\nip6:    fd42::1/48 (next free in servers)\n") {
		t.Errorf("dual-stack invite output: %q", r.stdout)
	}
	r = mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web2", "-ip", "fd42::99"))
	if !strings.Contains(r.stdout, "ip:     10.42.0.3/16 (next free in servers)\nip6:    fd42::99/48 (chosen)\n") {
		t.Errorf("invite -ip v6 output: %q", r.stdout)
	}
	mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "six", "-name", "v6only", "-ip", "fd60::7"))
	mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "legacy", "-name", "old", "-ip", "10.42.9.5"))
	mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "lab=10.42.7.0/24,fd42:0:0:7::/64", "-name", "lab1", "-ip", "10.42.7.7,fd42:0:0:7::7"))
	for _, bad := range [][]string{
		{"-cidr", "servers", "-name", "x", "-ip", "fd42::99"}, // taken
		{"-cidr", "legacy", "-name", "x", "-ip", "fd42::5"},   // a v4-only network
		{"-cidr", "servers", "-name", "x", "-ip", "fd42::5,fd42::6"},
	} {
		if r := meshCert(t, fixedNow, append([]string{"invite", "-config", config}, bad...)...); r.code == 0 {
			t.Errorf("invite %v accepted: %s", bad, r.stdout)
		}
	}
	r = mustOK(t, meshCert(t, fixedNow, "list", "-config", config, "-tree"))
	want := []string{
		"mesh 10.42.0.0/16 fd42::/48",
		"  servers 10.42.0.0/24 fd42::/64",
		"    - web1 10.42.0.2/16 fd42::1/48 invited",
		"    - web2 10.42.0.3/16 fd42::99/48 invited",
		"  lab 10.42.7.0/24 fd42:0:0:7::/64",
		"    - lab1 10.42.7.7/16 fd42:0:0:7::7/48 invited",
		"  legacy 10.42.9.0/24",
		"    - old 10.42.9.5/16 invited",
		"six fd60::/64",
		"  - v6only fd60::7/64 invited",
	}
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); !slices.Equal(got, want) {
		t.Errorf("list --tree:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
}
