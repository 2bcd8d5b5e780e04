package lighthouse

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/internal/testenv"
)

func yamlNode(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Kind == 0 {
		return &doc
	}
	return doc.Content[0]
}

func TestAllowListMostSpecificRuleWins(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		allow []string
		deny  []string
	}{
		{"absent list allows all", ``, []string{"10.0.0.1", "2001:db8::1"}, nil},
		{"only deny rules default to allow", `{"172.16.0.0/12": false}`,
			[]string{"10.0.0.1", "172.15.0.1", "2001:db8::1"}, []string{"172.16.0.1", "172.31.255.255"}},
		{"only allow rules default to deny in that family only", `{"10.0.0.0/8": true}`,
			[]string{"10.1.2.3", "2001:db8::1"}, []string{"192.0.2.1", "11.0.0.1"}},
		{"nested ranges with a default", `{"0.0.0.0/0": true, "10.0.0.0/8": false, "10.42.42.0/24": true}`,
			[]string{"192.0.2.1", "10.42.42.7"}, []string{"10.1.1.1", "10.42.43.1"}},
		{"ipv6 rules are separate", `{"2001:db8::/32": false}`,
			[]string{"10.0.0.1", "2001:db9::1"}, []string{"2001:db8::5"}},
		{"4-in-6 addresses judged by ipv4 rules (nebula #1786)", `{"0.0.0.0/0": true, "10.0.0.0/8": false}`,
			[]string{"::ffff:192.0.2.1"}, []string{"::ffff:10.0.0.1"}},
		{"host bits in a CIDR are masked", `{"10.1.2.3/8": false}`, []string{"11.0.0.1"}, []string{"10.9.9.9"}},
		{"yaml 1.1 booleans", `{"10.0.0.0/8": no}`, []string{"11.0.0.1"}, []string{"10.9.9.9"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAllowList("lighthouse.remote_allow_list", yamlNode(t, tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.allow {
				if !a.Allow(netip.MustParseAddr(s)) {
					t.Errorf("%s denied, want allowed", s)
				}
			}
			for _, s := range tc.deny {
				if a.Allow(netip.MustParseAddr(s)) {
					t.Errorf("%s allowed, want denied", s)
				}
			}
		})
	}
}

// allowListCases are judged both by our parser and, when installed, by nebula 1.6.1 itself.
var allowListCases = []struct {
	name    string
	yaml    string
	wantErr string // a fragment of our error; "" means accepted
}{
	{"all allow", `{"10.0.0.0/8": true, "192.168.0.0/16": true}`, ""},
	{"mixed with v4 default", `{"0.0.0.0/0": false, "10.0.0.0/8": true, "10.1.0.0/16": false}`, ""},
	{"mixed without v4 default", `{"10.0.0.0/8": true, "192.168.0.0/16": false}`, `no default for 0.0.0.0/0`},
	{"mixed without v6 default", `{"2001:db8::/32": true, "fd00::/8": false}`, `no default for ::/0`},
	{"v4 default does not cover v6", `{"0.0.0.0/0": true, "fd00::/8": false, "2001:db8::/32": true}`, `no default for ::/0`},
	{"bare address is not a CIDR", `{"10.0.0.1": true}`, `lighthouse.remote_allow_list."10.0.0.1": not a CIDR`},
	{"non-boolean value", `{"10.0.0.0/8": "maybe"}`, `lighthouse.remote_allow_list."10.0.0.0/8": value must be true or false`},
	{"not a mapping", `["10.0.0.0/8"]`, `lighthouse.remote_allow_list: must be a mapping`},
	{"yaml 1.1 boolean", `{"10.0.0.0/8": no}`, ""},
	{"interfaces only in local lists", `{interfaces: {eth0: true}}`, `not a CIDR`},
	{"same prefix twice with one value", `{"10.0.0.0/8": true, "10.1.0.0/8": true}`, ""},
}

func TestParseAllowListErrorsNameTheKey(t *testing.T) {
	for _, tc := range allowListCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAllowList("lighthouse.remote_allow_list", yamlNode(t, tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadAllowList) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// Nebula would pick one of the two values at random (map order); we refuse instead.
func TestParseAllowListRefusesConflictingDuplicatePrefix(t *testing.T) {
	_, err := ParseAllowList("k", yamlNode(t, `{"10.0.0.0/8": true, "10.1.0.0/8": false, "0.0.0.0/0": true}`))
	if !errors.Is(err, ErrBadAllowList) || !strings.Contains(err.Error(), `k."10.1.0.0/8"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestAllowListAcceptanceMatchesNebula runs `nebula -test` on each case: the real 1.6.1 must
// accept exactly what we accept.
func TestAllowListAcceptanceMatchesNebula(t *testing.T) {
	nebula := testenv.RequireBinary(t, "nebula")
	nebulaCert := testenv.RequireBinary(t, "nebula-cert")
	dir := t.TempDir()
	run := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	run(nebulaCert, "ca", "-name", "allowlist-test")
	run(nebulaCert, "sign", "-name", "h", "-ip", "10.99.0.1/16")
	for _, tc := range allowListCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fmt.Sprintf("pki: {ca: %[1]s/ca.crt, cert: %[1]s/h.crt, key: %[1]s/h.key}\n"+
				"listen: {host: 127.0.0.1, port: 4242}\ntun: {disabled: true}\n"+
				"lighthouse:\n  am_lighthouse: true\n  remote_allow_list: %s\n", dir, tc.yaml)
			p := filepath.Join(dir, "c.yml")
			if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out := run(nebula, "-test", "-config", p)
			nebulaRefused := strings.Contains(out, "remote_allow_list") && strings.Contains(out, "level=error")
			if !strings.Contains(out, "HostMap created") {
				t.Fatalf("nebula did not get as far as the lighthouse:\n%s", out)
			}
			_, err := ParseAllowList("lighthouse.remote_allow_list", yamlNode(t, tc.yaml))
			if weRefused := err != nil; weRefused != nebulaRefused {
				t.Fatalf("we refuse: %v, nebula refuses: %v\n%s", weRefused, nebulaRefused, out)
			}
		})
	}
}

func TestLocalAllowListInterfaces(t *testing.T) {
	a, err := ParseLocalAllowList("lighthouse.local_allow_list", yamlNode(t, `
interfaces:
  tun0: false
  'docker.*': false
"10.0.0.0/8": true
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"tun0": false, "docker0": false, "eth0": true, "xtun0": true, "tun01": true} {
		if got := a.AllowName(name); got != want {
			t.Errorf("AllowName(%q) = %v, want %v", name, got, want)
		}
	}
	if !a.Allow(netip.MustParseAddr("10.2.3.4")) || a.Allow(netip.MustParseAddr("192.0.2.1")) {
		t.Error("CIDR rules not applied beside interface rules")
	}
	if _, err := ParseLocalAllowList("l", yamlNode(t, `{interfaces: {a: true, b: false}}`)); !errors.Is(err, ErrBadAllowList) {
		t.Errorf("mixed interface values accepted: %v", err)
	}
	if _, err := ParseLocalAllowList("l", yamlNode(t, `{interfaces: {"(": true}}`)); err == nil || !strings.Contains(err.Error(), `l.interfaces."("`) {
		t.Errorf("bad regexp: %v", err)
	}
	if _, err := ParseAllowList("r", yamlNode(t, `{interfaces: {a: true}}`)); !errors.Is(err, ErrBadAllowList) {
		t.Errorf("interfaces accepted in a remote allow list: %v", err)
	}
}

func TestRemoteAllowRangesApplyPerVPNRange(t *testing.T) {
	r, err := ParseRemoteAllowList(
		"lighthouse.remote_allow_list", yamlNode(t, `{"172.16.0.0/12": false}`),
		"lighthouse.remote_allow_ranges", yamlNode(t, `{"10.42.42.0/24": {"192.168.0.0/16": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		vpn, addr string
		want      bool
	}{
		{"10.42.42.5", "192.168.1.1", true},
		{"10.42.42.5", "192.0.2.1", false},  // only private for that range
		{"10.42.1.5", "192.0.2.1", true},    // global list only
		{"10.42.1.5", "172.16.0.1", false},  // global deny
		{"10.42.42.5", "2001:db8::1", true}, // range list has no v6 rules
	}
	for _, tc := range tests {
		if got := r.Allow(netip.MustParseAddr(tc.vpn), netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Allow(%s, %s) = %v, want %v", tc.vpn, tc.addr, got, tc.want)
		}
	}
	if _, err := ParseRemoteAllowList("a", nil, "b", yamlNode(t, `{"x": {"10.0.0.0/8": true}}`)); err == nil || !strings.Contains(err.Error(), `b."x"`) {
		t.Errorf("bad range key: %v", err)
	}
	if r, err := ParseRemoteAllowList("a", nil, "b", nil); r != nil || err != nil {
		t.Errorf("absent lists = %v, %v; want nil, nil", r, err)
	}
}

// FuzzParseAllowList: any YAML is either refused with ErrBadAllowList or gives a list that
// answers for every address without panicking, with a default for both families.
func FuzzParseAllowList(f *testing.F) {
	for _, tc := range allowListCases {
		f.Add(tc.yaml)
	}
	f.Add(`{interfaces: {'eth.*': true}, "::/0": false}`)
	probes := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("2001:db8::1"), {}}
	f.Fuzz(func(t *testing.T, src string) {
		var doc yaml.Node
		if yaml.Unmarshal([]byte(src), &doc) != nil || len(doc.Content) == 0 {
			return
		}
		for _, parse := range []func(string, *yaml.Node) (*AllowList, error){ParseAllowList, ParseLocalAllowList} {
			a, err := parse("k", doc.Content[0])
			if err != nil {
				if !errors.Is(err, ErrBadAllowList) {
					t.Fatalf("error %v does not wrap ErrBadAllowList", err)
				}
				continue
			}
			for _, p := range probes {
				a.Allow(p)
			}
			a.AllowName("eth0")
		}
	})
}
