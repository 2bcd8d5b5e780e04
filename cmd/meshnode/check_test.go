package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/overlay"
)

func TestCheckSaysWhichFirewallDropsTheTraffic(t *testing.T) {
	p := startPair(t)

	// By VPN IP first: names come from the certificates of peers we hold tunnels to.
	code, out, errOut := runCLI("check", "10.42.0.2", "tcp/5432", "-control", p.sock)
	if code != 0 || !strings.Contains(out, "tcp/5432 from host1 (10.42.0.1, groups [cli, web]) to host2 (10.42.0.2, groups [cli, web])") ||
		!strings.Contains(out, "tunnel    up, direct to 198.18.0.2:4242, round trip ") ||
		!strings.Contains(out, "outbound  this host lets it out: outbound[0] {port: any, proto: any, host: any}") ||
		!strings.Contains(out, "inbound   host2 lets it in: inbound[0] {port: any, proto: any, host: any}") ||
		!strings.Contains(out, "result: ALLOWED") {
		t.Fatalf("check, all open: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("meshnode check 10.42.0.2 tcp/5432:\n%s", out)

	// host2 admits icmp and web -> tcp/5432 only.
	if err := p.nodes[1].SetFirewall(firewall.Config{
		Outbound: []firewall.Rule{{Port: "any", Proto: "any", Host: "any"}},
		Inbound:  []firewall.Rule{{Port: "any", Proto: "icmp", Host: "any"}, {Port: "5432", Proto: "tcp", Group: "web"}},
	}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI("check", "-control", p.sock, "10.42.0.2", "tcp/22")
	for _, want := range []string{
		"inbound   host2 drops it from you: no inbound rule matches your groups [cli, web] (default drop)",
		"host2's rules that let you in: inbound[0] {port: any, proto: icmp, host: any}; inbound[1] {port: 5432, proto: tcp, group: web}",
		"result: DROPPED by host2's inbound firewall: host2 (10.42.0.2) drops tcp/22 from you",
		"to allow it: on host2, add {port: 22, proto: tcp, group: cli} to firewall.inbound, then run meshnode reload there",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check tcp/22: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	t.Logf("meshnode check 10.42.0.2 tcp/22:\n%s", out)

	// --json (and -json) print the report; the exit code still says dropped.
	for _, flag := range []string{"--json", "-json"} {
		code, out, errOut = runCLI("check", "host2", "tcp/22", flag, "--control", p.sock)
		var c overlay.FirewallCheck
		if err := json.Unmarshal([]byte(out), &c); code != 1 || err != nil || c.Result != overlay.CheckDroppedInbound ||
			c.Inbound == nil || c.Inbound.Reason != "no_rule" || c.Inbound.Action != "drop" || len(c.Inbound.RulesForHost) != 2 || !c.Outbound.Allowed {
			t.Fatalf("check %s: exit %d, %v\n%s%s", flag, code, err, out, errOut)
		}
	}
	t.Logf("meshnode check host2 tcp/22 -json:\n%s", out)

	// Our own outbound rules: only icmp leaves host1.
	fw := "firewall:\n  outbound: [{port: any, proto: icmp, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
	if err := os.WriteFile(p.config[0], []byte(hostConfig(p.dir, 0, 4242, fw)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI("reload", "-control", p.sock); code != 0 {
		t.Fatalf("reload: %d %s%s", code, out, errOut)
	}
	code, out, _ = runCLI("check", "host2", "udp/53", "-control", p.sock)
	for _, want := range []string{
		"outbound  this host drops it: no outbound rule matches host2 (groups [cli, web]) (default drop)",
		"rules for udp/53: none",
		"rules that match host2: outbound[0] {port: any, proto: icmp, host: any}",
		"result: DROPPED by this host's outbound firewall: udp/53 to host2 (10.42.0.2) never leaves this host",
		"to allow it: add {port: 53, proto: udp, group: cli} to firewall.outbound here, then run meshnode reload",
		"and on host2: add {port: 53, proto: udp, group: cli} to its firewall.inbound",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check udp/53: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	t.Logf("meshnode check host2 udp/53 (outbound refused):\n%s", out)
	if code, out, _ := runCLI("check", "host2", "icmp", "-control", p.sock); code != 0 || !strings.Contains(out, "ALLOWED") {
		t.Fatalf("check icmp: exit %d\n%s", code, out)
	}

	for _, bad := range [][]string{{"check", "host2"}, {"check", "host2", "tcp/x"}, {"check", "host2", "sctp/1"}, {"check"}} {
		if code, _, errOut := runCLI(append(bad, "-control", p.sock)...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d: %s", bad, code, errOut)
		}
	}
	if code, _, errOut := runCLI("check", "nosuchhost", "tcp/22", "-control", p.sock); code != 1 || !strings.Contains(errOut, "unknown host nosuchhost") {
		t.Fatalf("check unknown: exit %d: %s", code, errOut)
	}
}
