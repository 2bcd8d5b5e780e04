package overlay

import (
	"strings"
	"testing"
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
