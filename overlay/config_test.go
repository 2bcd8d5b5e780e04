package overlay

import (
	"strings"
	"testing"
	"time"
)

const minimalPKI = "pki:\n  ca: /etc/mesh/ca.crt\n  cert: /etc/mesh/host.crt\n  key: /etc/mesh/host.key\n"

func TestConfigErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", minimalPKI + "lisen:\n  port: 4242\n", []string{"node.yml:5", `unknown key "lisen"`}},
		{"unknown nested key", minimalPKI + "listen:\n  prot: 4242\n", []string{"node.yml:6", "listen.prot", `unknown key "prot"`}},
		{"wrong type", minimalPKI + "listen:\n  port: lots\n", []string{"node.yml:6", "listen.port"}},
		{"missing pki", "listen:\n  port: 4242\n", []string{"pki.ca: required", "pki.cert: required", "pki.key: required"}},
		{"bad cipher", minimalPKI + "cipher: des\n", []string{`cipher: "des" is not supported`}},
		{"bad static host", minimalPKI + "static_host_map:\n  \"10.1.0.2\": [\"nohostport\"]\n", []string{`static_host_map["10.1.0.2"]`, "not host:port"}},
		{"lighthouse without static entry", minimalPKI + "lighthouse:\n  hosts: [\"10.1.0.9\"]\n", []string{"lighthouse.hosts[0]", "no static_host_map entry"}},
		{"bad blocklist entry", minimalPKI + "  blocklist: [\"abc\"]\n", []string{"pki.blocklist[0]"}},
		{"bad mtu", minimalPKI + "tun:\n  mtu: 100\n", []string{"tun.mtu"}},
		{"bad firewall rule", minimalPKI + "firewall:\n  inbound:\n    - {port: 80-, proto: tcp, host: any}\n", []string{"firewall.inbound[0].port"}},
		{"bad log level", minimalPKI + "logging:\n  level: loud\n", []string{"logging.level"}},
		{"bad control mode", minimalPKI + "control:\n  mode: rw\n", []string{"control.mode"}},
		{"negative blocklist interval", minimalPKI + "renewal:\n  blocklist_interval: -5s\n", []string{"renewal.blocklist_interval"}},
		{"yaml syntax", minimalPKI + "listen: [\n", []string{"node.yml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), "node.yml")
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNebulaExampleConfigLoadsWithDefaults(t *testing.T) {
	y := minimalPKI + `
static_host_map:
  "192.168.100.1": ["100.64.22.11:4242"]
lighthouse:
  am_lighthouse: false
  interval: 60
  hosts:
    - "192.168.100.1"
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: true
tun:
  disabled: false
  dev: nebula1
  drop_local_broadcast: false
  drop_multicast: false
  tx_queue: 500
  mtu: 1300
logging:
  level: info
  format: text
firewall:
  conntrack:
    tcp_timeout: 12m
    udp_timeout: 3m
    default_timeout: 10m
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
`
	c, err := ParseConfig([]byte(y), "nebula.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Handshakes.TryInterval != DefaultTryInterval || c.Handshakes.Retries != DefaultRetries {
		t.Errorf("handshake defaults not applied: %+v", c.Handshakes)
	}
	if !*c.PKI.DisconnectInvalid {
		t.Error("pki.disconnect_invalid must default to true")
	}
}

func TestEmptyConfigReportsRequiredKeys(t *testing.T) {
	_, err := ParseConfig(nil, "empty.yml")
	if err == nil || !strings.Contains(err.Error(), "pki.ca: required") {
		t.Fatalf("got %v", err)
	}
}

func TestBlocklistPushDefaultsOnAndCanBeTurnedOff(t *testing.T) {
	for y, want := range map[string]bool{"": true, "renewal:\n  blocklist_push: true\n": true, "renewal:\n  blocklist_push: false\n": false} {
		c, err := ParseConfig([]byte(minimalPKI+y), "node.yml")
		if err != nil {
			t.Fatalf("%q: %v", y, err)
		}
		if got := *c.Renewal.BlocklistPush; got != want {
			t.Errorf("%q: blocklist_push = %v, want %v", y, got, want)
		}
	}
	if _, err := ParseConfig([]byte(minimalPKI+"renewal:\n  blocklist_push: soon\n"), "node.yml"); err == nil || !strings.Contains(err.Error(), "blocklist_push") {
		t.Errorf("a non-boolean blocklist_push: %v", err)
	}
}

func TestConfigUnknownKeysSuggestAKnownOne(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{minimalPKI + "listen:\n  prot: 4242\n", "did you mean listen.port?"},
		{minimalPKI + "punchy:\n  respond_dealy: 5s\n", "did you mean punchy.respond_delay?"},
		{minimalPKI + "tun:\n  so_mark: 1\n", "did you mean listen.so_mark?"}, // right name, wrong section
		{minimalPKI + "sshd:\n  enabeld: true\n", "did you mean sshd.enabled?"},
		{minimalPKI + "firewall:\n  inbound:\n    - {port: any, proto: any, hots: any}\n", "did you mean firewall.inbound[].host?"},
	} {
		_, err := ParseConfig([]byte(tc.yaml), "node.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%q: error %v, want one with %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := ParseConfig([]byte(minimalPKI+"zzzqqq: 1\n"), "node.yml"); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("nothing is close to zzzqqq, yet: %v", err)
	}
	if _, err := ParseConfig([]byte(minimalPKI+"listen:\n  port: 1\n  port: 2\n"), "node.yml"); err == nil || !strings.Contains(err.Error(), "repeated") {
		t.Errorf("repeated key: %v", err)
	}
}

func TestConfigIgnoredKeysWarnOnceEach(t *testing.T) {
	c, err := ParseConfig([]byte(minimalPKI+"listen:\n  windows_bypass_wdf: false\nsshd:\n  enabled: true\n  authorized_users:\n    - user: a\n      keys: [k]\nstats:\n  type: graphite\n  prefix: nebula\n"), "node.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"node.yml:6: listen.windows_bypass_wdf has no effect", "node.yml:8: sshd.enabled has no effect",
		"node.yml:9: sshd.authorized_users has no effect", "stats.prefix has no effect", "stats.type: graphite has no effect"}
	if len(c.Warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", c.Warnings, len(want))
	}
	for _, w := range want {
		n := 0
		for _, got := range c.Warnings {
			if strings.Contains(got, w) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d warnings contain %q: %q", n, w, c.Warnings)
		}
	}
}

func TestConfigNebula111Keys(t *testing.T) {
	c, err := ParseConfig([]byte(minimalPKI+"listen:\n  so_mark: 42\n  accept_recv_error: private\n  routines: 3\npunchy:\n  respond_delay: 2s\nstatic_map:\n  network: ip\n  lookup_timeout: 1s\nlogging:\n  level: trace\n"), "node.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.SoMark != 42 || c.Listen.AcceptRecvError != "private" || c.Routines != 3 || c.Punchy.RespondDelay != 2*time.Second ||
		c.StaticMap.Network != "ip" || c.StaticMap.LookupTimeout != time.Second {
		t.Errorf("keys not read: %+v %+v %d %+v", c.Listen, c.Punchy, c.Routines, c.StaticMap)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "listen.routines is deprecated") {
		t.Errorf("warnings %q, want the deprecation of listen.routines", c.Warnings)
	}
	// Defaults, as in Nebula.
	c, err = ParseConfig([]byte(minimalPKI+"routines: 2\nlisten:\n  routines: 4\n  accept_recv_error: false\n"), "node.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Routines != 2 || c.Listen.AcceptRecvError != "never" || c.Listen.SendRecvError != "always" || c.Punchy.RespondDelay != 5*time.Second ||
		c.StaticMap.Network != "ip4" || c.StaticMap.LookupTimeout != 250*time.Millisecond {
		t.Errorf("defaults: %+v %+v %d %+v", c.Listen, c.Punchy, c.Routines, c.StaticMap)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "listen.routines has no effect") {
		t.Errorf("warnings %q, want listen.routines ignored beside routines", c.Warnings)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"listen:\n  so_mark: -1\n", "listen.so_mark"},
		{"listen:\n  accept_recv_error: sometimes\n", "listen.accept_recv_error"},
		{"static_map:\n  network: ipx\n", "static_map.network"},
		{"pki:\n  initiating_version: 3\n", "pki.initiating_version"},
		{"lighthouse:\n  remote_allow_list:\n    \"10.0.0.0/8\": maybe\n", "remote_allow_list"},
	} {
		y := minimalPKI + tc.yaml
		if strings.HasPrefix(tc.yaml, "pki:") {
			y = strings.Replace(minimalPKI, "pki:\n", tc.yaml, 1)
		}
		if _, err := ParseConfig([]byte(y), "node.yml"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one about %q", tc.yaml, err, tc.want)
		}
	}
}

func TestConfigResolveStaticMapNetwork(t *testing.T) {
	for _, tc := range []struct{ network string }{{"ip4"}, {"ip6"}, {"ip"}} {
		aps, err := resolveStaticAddr("localhost:4242", StaticMapConfig{Network: tc.network, LookupTimeout: time.Second})
		if err != nil {
			t.Skipf("resolver: %v", err) // a host without ::1 for localhost
		}
		if len(aps) == 0 {
			t.Errorf("%s: %v", tc.network, aps)
		}
		for _, ap := range aps {
			if ap.Port() != 4242 || tc.network == "ip4" && !ap.Addr().Is4() || tc.network == "ip6" && !ap.Addr().Is6() {
				t.Errorf("%s: %v", tc.network, ap)
			}
		}
	}
}
