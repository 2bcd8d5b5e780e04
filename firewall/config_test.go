package firewall

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func decodeConfig(t *testing.T, src string) (Config, error) {
	t.Helper()
	var wrap struct {
		Firewall Config `yaml:"firewall"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(src)))
	dec.KnownFields(true)
	err := dec.Decode(&wrap)
	return wrap.Firewall, err
}

// nebulaExample is the firewall section of Nebula's examples/config.yml, plus keys of its era.
const nebulaExample = `
firewall:
  outbound_action: drop
  inbound_action: reject
  conntrack:
    tcp_timeout: 12m
    udp_timeout: 3m
    default_timeout: 10m
    max_connections: 100000
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: icmp
      host: any
    - port: 443
      proto: tcp
      groups:
        - laptop
        - home
    - port: 8000-8100
      proto: udp
      group: [remote_client]
      local_cidr: 192.168.100.1/24
    - code: 0
      proto: icmp
      groups: ops
      ca_name: Acme
      ca_sha: AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899
`

func TestNebulaConfigDecodesUnchanged(t *testing.T) {
	cfg, err := decodeConfig(t, nebulaExample)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Conntrack.TCPTimeout != 12*time.Minute || cfg.Conntrack.UDPTimeout != 3*time.Minute ||
		cfg.Conntrack.DefaultTimeout != 10*time.Minute || cfg.Conntrack.MaxConnections != 100000 {
		t.Errorf("conntrack = %+v", cfg.Conntrack)
	}
	if cfg.InboundAction != "reject" || cfg.OutboundAction != "drop" {
		t.Errorf("actions = %q %q", cfg.InboundAction, cfg.OutboundAction)
	}
	want := []Rule{
		{Port: "any", Proto: "icmp", Host: "any"},
		{Port: "443", Proto: "tcp", Groups: []string{"laptop", "home"}},
		{Port: "8000-8100", Proto: "udp", Group: "remote_client", LocalCIDR: "192.168.100.1/24"},
		{Code: "0", Proto: "icmp", Groups: []string{"ops"}, CAName: "Acme", CASha: "AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899"},
	}
	if len(cfg.Inbound) != len(want) {
		t.Fatalf("inbound = %+v", cfg.Inbound)
	}
	for i := range want {
		if got := cfg.Inbound[i]; got.Port != want[i].Port || got.Code != want[i].Code || got.Proto != want[i].Proto ||
			got.Host != want[i].Host || got.Group != want[i].Group || strings.Join(got.Groups, ",") != strings.Join(want[i].Groups, ",") ||
			got.LocalCIDR != want[i].LocalCIDR || got.CAName != want[i].CAName || got.CASha != want[i].CASha {
			t.Errorf("inbound[%d] = %+v, want %+v", i, got, want[i])
		}
	}
	if _, err := New(cfg, Options{}); err != nil {
		t.Fatalf("New: %v", err)
	}
}

func TestYAMLRejectsWhatNebulaWouldMisread(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown rule key", "firewall:\n  inbound:\n    - port: 80\n      prot: tcp\n      host: any\n", `unknown key "prot"`},
		{"repeated rule key", "firewall:\n  inbound:\n    - port: 80\n      port: 81\n      proto: tcp\n      host: any\n", `"port" repeated`},
		{"group list of two", "firewall:\n  inbound:\n    - port: 80\n      proto: tcp\n      group: [a, b]\n", "group must be one value"},
		{"rule not a mapping", "firewall:\n  inbound:\n    - 80\n", "must be a mapping"},
		{"port as a list", "firewall:\n  inbound:\n    - port: [80]\n      proto: tcp\n      host: any\n", "port must be a single value"},
		{"unknown firewall key", "firewall:\n  inbund: []\n", "inbund"},
		{"unknown conntrack key", "firewall:\n  conntrack:\n    tcp_timeot: 1m\n", "tcp_timeot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeConfig(t, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestInvalidRulesNameTheirIndexAndKey(t *testing.T) {
	ok := Rule{Port: "80", Proto: "tcp", Host: "any"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"open range", Config{Inbound: []Rule{ok, ok, {Port: "80-", Proto: "tcp", Host: "any"}}}, `firewall.inbound[2].port: invalid port "80-"`},
		{"port above 65535", Config{Outbound: []Rule{{Port: "65536", Proto: "tcp", Host: "any"}}}, `firewall.outbound[0].port: invalid port "65536"`},
		{"range backwards", Config{Inbound: []Rule{{Port: "90-80", Proto: "udp", Host: "any"}}}, `firewall.inbound[0].port: invalid port "90-80": range start is above its end`},
		{"negative port", Config{Inbound: []Rule{{Port: "-1", Proto: "udp", Host: "any"}}}, `firewall.inbound[0].port`},
		{"bad code", Config{Inbound: []Rule{{Code: "x", Proto: "tcp", Host: "any"}}}, `firewall.inbound[0].code: invalid port "x"`},
		{"port and code", Config{Inbound: []Rule{{Port: "1", Code: "1", Proto: "tcp", Host: "any"}}}, `firewall.inbound[0]: only one of port or code`},
		{"missing port", Config{Inbound: []Rule{{Proto: "tcp", Host: "any"}}}, `firewall.inbound[0].port: missing`},
		{"missing proto", Config{Inbound: []Rule{{Port: "1", Host: "any"}}}, `firewall.inbound[0].proto: missing`},
		{"unknown proto", Config{Inbound: []Rule{{Port: "1", Proto: "sctp", Host: "any"}}}, `firewall.inbound[0].proto: invalid proto "sctp"`},
		{"no selector", Config{Inbound: []Rule{{Port: "1", Proto: "tcp"}}}, `firewall.inbound[0]: needs at least one of host`},
		{"group and groups", Config{Inbound: []Rule{{Port: "1", Proto: "tcp", Group: "a", Groups: []string{"b"}}}}, `firewall.inbound[0]: only one of group or groups`},
		{"empty group", Config{Inbound: []Rule{{Port: "1", Proto: "tcp", Groups: []string{"a", ""}}}}, `firewall.inbound[0].groups: empty group name`},
		{"bad cidr", Config{Inbound: []Rule{{Port: "1", Proto: "tcp", CIDR: "10.0.0.0/33"}}}, `firewall.inbound[0].cidr: invalid cidr "10.0.0.0/33"`},
		{"bad local cidr", Config{Inbound: []Rule{{Port: "1", Proto: "tcp", Host: "any", LocalCIDR: "nope"}}}, `firewall.inbound[0].local_cidr: invalid local_cidr "nope"`},
		{"bad ca_sha", Config{Inbound: []Rule{{Port: "1", Proto: "tcp", CASha: "abc"}}}, `firewall.inbound[0].ca_sha: invalid ca_sha "abc"`},
		{"bad action", Config{InboundAction: "deny"}, `firewall.inbound_action: invalid action "deny"`},
		{"negative timeout", Config{Conntrack: ConntrackConfig{UDPTimeout: -time.Second}}, `firewall.conntrack.udp_timeout: negative timeout`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err %v does not wrap ErrInvalidConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.HasPrefix(ce.Path, "firewall.") {
				t.Fatalf("err %v carries no ConfigError path", err)
			}
		})
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	_, err := New(Config{
		Inbound:  []Rule{{Port: "x", Proto: "tcp", Host: "any"}, {Port: "1", Proto: "nope", Host: "any"}},
		Outbound: []Rule{{Port: "1", Proto: "tcp"}},
	}, Options{})
	for _, want := range []string{"inbound[0].port", "inbound[1].proto", "outbound[0]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to mention %s", err, want)
		}
	}
}

func TestParsePortSyntax(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int32
	}{
		{"any", portAny, portAny},
		{"0", portAny, portAny},
		{"fragment", portFragment, portFragment},
		{"80", 80, 80},
		{"65535", 65535, 65535},
		{"8000-8100", 8000, 8100},
		{" 1 - 2 ", 1, 2},
		{"0-100", 0, 100}, // Nebula reads this as any; we take it literally
		{"22-22", 22, 22},
	} {
		lo, hi, err := parsePort(tc.in)
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("parsePort(%q) = %d, %d, %v; want %d, %d", tc.in, lo, hi, err, tc.lo, tc.hi)
		}
	}
	for _, bad := range []string{"", "-", "80-", "-80", "a-b", "1-2-3", "65536", "http", "1.5"} {
		if _, _, err := parsePort(bad); err == nil {
			t.Errorf("parsePort(%q) accepted", bad)
		}
	}
}

func TestConfigRoundTripsThroughYAML(t *testing.T) {
	cfg, err := decodeConfig(t, nebulaExample)
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(map[string]Config{"firewall": cfg})
	if err != nil {
		t.Fatal(err)
	}
	again, err := decodeConfig(t, string(out))
	if err != nil {
		t.Fatalf("re-decoding %s: %v", out, err)
	}
	if len(again.Inbound) != len(cfg.Inbound) || again.Inbound[2].LocalCIDR != "192.168.100.1/24" || again.Inbound[3].CASha != cfg.Inbound[3].CASha {
		t.Fatalf("round trip changed the rules:\n%s", out)
	}
}
