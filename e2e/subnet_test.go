package e2e

// Subnet routing (tun.unsafe_routes and the certificate's subnets) over real TUN devices:
// a LAN of two plain hosts that run no overlay, behind a gateway host.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/overlay"
)

const (
	lanNet  = "198.19.1.0/24"
	lanHost = "198.19.1.10" // admitted by the gateway's local_cidr rule for TCP
	lanPeer = "198.19.1.11" // reached by ping only
)

// subnetLab is the topology: overlay hosts on one underlay switch, the gateways also on a
// LAN switch with the plain hosts lan1 and lan2 (default route via the first gateway).
type subnetLab struct {
	ca        *pki
	hosts     []*meshHost // hosts[0] is the client
	lan       []*meshHost // plain hosts: overlay holds their LAN address
	confs     []nodeConf
	dir       string
	meshnode  string
	gwCarries []bool
}

// signSubnets issues a host cert that may route subnets ("" for none).
func (p *pki) signSubnets(t testing.TB, name, cidr, subnets string) (crt, key string) {
	t.Helper()
	crt, key = p.path(name+".crt"), p.path(name+".key")
	args := []string{"sign", "-ca-crt", p.path("ca.crt"), "-ca-key", p.path("ca.key"),
		"-name", name, "-ip", cidr, "-groups", "e2e", "-out-crt", crt, "-out-key", key}
	if subnets != "" {
		args = append(args, "-subnets", subnets)
	}
	p.run(t, args...)
	return crt, key
}

// newSubnetLab builds the namespaces; impls[0] is the client, the rest are gateways (or
// would-be gateways: carries says whose cert holds the LAN). confFn shapes each config.
func newSubnetLab(t *testing.T, tl *tools, impls []string, carries []bool, lanOnGW []bool) *subnetLab {
	t.Helper()
	l := &subnetLab{ca: newPKI(t, tl.certTool(t, "mesh-cert")), dir: t.TempDir(), meshnode: tl.impl(t, implMeshnode), gwCarries: carries}
	sw := netns.NewSwitch(t, "sw")
	lanSw := netns.NewSwitch(t, "lan")
	for i, impl := range impls {
		h := &meshHost{name: fmt.Sprintf("h%d", i+1), underlay: fmt.Sprintf("198.18.0.%d", i+1),
			overlay: fmt.Sprintf("10.42.0.%d", i+1), bin: tl.impl(t, impl)}
		h.ns = netns.New(t, h.name)
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		if i > 0 && lanOnGW[i] {
			lanSw.Attach(t, h.ns, "eth1", fmt.Sprintf("198.19.1.%d/24", i))
			h.ns.Sysctl(t, "net.ipv4.ip_forward", "1")
		}
		l.hosts = append(l.hosts, h)
	}
	for i, a := range []string{lanHost, lanPeer} {
		h := &meshHost{name: fmt.Sprintf("lan%d", i+1), overlay: a}
		h.ns = netns.New(t, h.name)
		lanSw.Attach(t, h.ns, "eth0", a+"/24")
		h.ns.Route(t, "default", "via", "198.19.1.1")
		l.lan = append(l.lan, h)
	}
	for i, h := range l.hosts {
		subnets := ""
		if i > 0 && carries[i] {
			subnets = lanNet
		}
		crt, key := l.ca.signSubnets(t, h.name, h.overlay+"/24", subnets)
		c := staticConf(l.ca.path("ca.crt"), crt, key, meshSpec{cipher: "aes"}, h, l.hosts)
		c.extra = "timers:\n  connection_alive_interval: 2s\n  pending_deletion_interval: 3s\n"
		if impl := impls[i]; impl == implNebula {
			c.extra = "" // nebula 1.6.1 reads these timers as plain seconds; its defaults do
		}
		l.confs = append(l.confs, c)
	}
	return l
}

func (l *subnetLab) start(t *testing.T) {
	t.Helper()
	for i, h := range l.hosts {
		h.writeConfig(t, l.dir, l.confs[i])
		h.start(t)
	}
}

// rewrite writes host i's config again (for a reload).
func (l *subnetLab) rewrite(t *testing.T, i int) {
	t.Helper()
	if err := os.WriteFile(l.hosts[i].config, []byte(l.confs[i].render()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (l *subnetLab) cli(h *meshHost, args ...string) (string, error) {
	return h.ns.RunTimeout(30*time.Second, l.meshnode, append(args, "-control", h.sock)...)
}

func (l *subnetLab) status(t *testing.T, h *meshHost) overlay.ControlStatus {
	t.Helper()
	out, err := l.cli(h, "status", "-json")
	if err != nil {
		t.Fatalf("%s: status -json: %v\n%s", h.name, err, out)
	}
	var st overlay.ControlStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	return st
}

// tcpRefused checks that a TCP connection from one host to another does not get through.
func tcpRefused(t *testing.T, tl *tools, from, to *meshHost, port int) {
	t.Helper()
	bin := tl.tcpcheck(t)
	addr := fmt.Sprintf("%s:%d", to.overlay, port)
	srv := to.ns.Start(t, "tcpcheck-serve-refused", bin, "serve", "-listen", addr, "-count", "1")
	if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
		t.Fatal(err)
	}
	out, err := from.ns.RunTimeout(20*time.Second, bin, "send", "-to", addr, "-bytes", "1000", "-timeout", "3s")
	if err == nil {
		t.Fatalf("TCP %s -> %s got through: %s", from.name, addr, out)
	}
	_ = srv.Stop(2 * time.Second)
}

const lanRoute = "  unsafe_routes:\n    - route: " + lanNet + "\n      via: %s\n"

// TestSubnetGateway runs the LAN-behind-a-gateway case for each pairing of implementations.
// With meshnode on both sides it also shows local_cidr admitting one LAN host and not the
// other, a host whose cert lacks the LAN failing as gateway (after a live reload of
// tun.unsafe_routes onto it, and back), and status and check describing the route.
func TestSubnetGateway(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range []struct{ client, gateway string }{
		{implMeshnode, implMeshnode},
		{implMeshnode, implNebula},
		{implNebula, implMeshnode},
	} {
		t.Run(c.client+"-via-"+c.gateway, func(t *testing.T) {
			impls := []string{c.client, c.gateway}
			carries, onLAN := []bool{false, true}, []bool{false, true}
			full := c.client == implMeshnode && c.gateway == implMeshnode
			if full {
				// h3 sits on the LAN too and forwards, but its cert does not carry the LAN.
				impls, carries, onLAN = append(impls, implMeshnode), append(carries, false), append(onLAN, true)
			}
			l := newSubnetLab(t, tl, impls, carries, onLAN)
			client, gw := l.hosts[0], l.hosts[1]
			l.confs[0].tunExtra = fmt.Sprintf(lanRoute, gw.overlay)
			if c.gateway == implMeshnode {
				l.confs[1].inbound = []string{
					"{port: any, proto: any, host: any}", // the gateway itself (its VPN IP only)
					"{port: any, proto: icmp, host: any, local_cidr: " + lanNet + "}",
					"{port: 7000-7999, proto: tcp, host: any, local_cidr: " + lanHost + "/32}",
				}
			}
			l.start(t)
			lan1, lan2 := l.lan[0], l.lan[1]
			seen := lan1.ns.Counter(t, "input", "ip saddr "+client.overlay)
			for _, dst := range []string{gw.overlay, lanHost, lanPeer} {
				if took, err := client.ns.WaitPing(tunnelUpTimeout, dst); err != nil {
					t.Fatalf("%s -> %s: %v\nclient log:\n%s\ngateway log:\n%s", client.name, dst, err, client.proc.Tail(30), gw.proc.Tail(30))
				} else {
					t.Logf("ping %s -> %s through %s (%s): %v", client.name, dst, gw.name, c.gateway, took.Round(time.Millisecond))
				}
			}
			transfer(t, tl, client, lan1, 7001, 8<<20, 14)
			if n, err := seen(); err != nil || n == 0 {
				t.Fatalf("lan1 never saw the client's overlay IP %s as a source (bytes %d, %v)", client.overlay, n, err)
			}
			if c.gateway != implMeshnode {
				return
			}
			// local_cidr: lan2 answers ping, but no rule admits TCP to it.
			before := l.status(t, gw).Drops["firewall_inbound"]
			tcpRefused(t, tl, client, lan2, 7002)
			if after := l.status(t, gw).Drops["firewall_inbound"]; after <= before {
				t.Fatalf("gateway's firewall_inbound drops %d -> %d: the refused TCP was not counted", before, after)
			}
			if !full {
				return
			}
			checkSubnetStatusAndCheck(t, l, client, gw)
			// A gateway whose cert lacks the LAN: reload the client onto h3; nothing passes.
			h3 := l.hosts[2]
			l.confs[0].tunExtra = fmt.Sprintf(lanRoute, h3.overlay)
			l.rewrite(t, 0)
			if out, err := l.cli(client, "reload"); err != nil || !strings.Contains(out, "198.19.1.0/24") {
				t.Fatalf("reload onto h3: %v\n%s", err, out)
			}
			_ = client.ns.Ping(h3.overlay) // the tunnel to h3
			if err := client.ns.Ping(lanHost); err == nil {
				t.Fatal("ping through h3, whose cert does not carry the LAN, got through")
			}
			st := l.status(t, client)
			if len(st.Routes) != 1 || len(st.Routes[0].Gateways) != 1 || st.Routes[0].Gateways[0].CarriesRoute == nil || *st.Routes[0].Gateways[0].CarriesRoute {
				t.Fatalf("status does not say h3 lacks the route: %+v", st.Routes)
			}
			if st.Drops["firewall_outbound"] == 0 {
				t.Fatal("the client did not count its refusal to send through h3")
			}
			out, _ := l.cli(client, "status")
			t.Logf("client status with h3 as gateway:\n%s", out)
			// And back to h2, live.
			l.confs[0].tunExtra = fmt.Sprintf(lanRoute, gw.overlay)
			l.rewrite(t, 0)
			if out, err := l.cli(client, "reload"); err != nil {
				t.Fatalf("reload back: %v\n%s", err, out)
			}
			if _, err := client.ns.WaitPing(10*time.Second, lanHost); err != nil {
				t.Fatalf("after reloading back onto h2: %v", err)
			}
		})
	}
}

// checkSubnetStatusAndCheck: status lists the route and its gateway; check of a LAN
// destination asks the gateway with the LAN address (allowed for lan1 tcp/7001, dropped
// inbound for lan2).
func checkSubnetStatusAndCheck(t *testing.T, l *subnetLab, client, gw *meshHost) {
	t.Helper()
	st := l.status(t, client)
	if len(st.Routes) != 1 || st.Routes[0].Route.String() != lanNet || st.Routes[0].Active != gw.overlay {
		t.Fatalf("status routes: %+v", st.Routes)
	}
	out, err := l.cli(client, "status")
	if err != nil || !strings.Contains(out, "route "+lanNet+" via "+gw.overlay+" up") {
		t.Fatalf("status table: %v\n%s", err, out)
	}
	out, err = l.cli(client, "check", lanHost, "tcp/7001")
	if err != nil || !strings.Contains(out, "behind gateway") {
		t.Fatalf("check %s tcp/7001: %v\n%s", lanHost, err, out)
	}
	t.Logf("check %s tcp/7001:\n%s", lanHost, out)
	if out, err := l.cli(client, "ping", lanHost, "-c", "1"); err == nil || !strings.Contains(out, "meshnode ping "+gw.overlay+" for its gateway") {
		t.Fatalf("meshnode ping of a LAN host: %v\n%s", err, out)
	}
	out, err = l.cli(client, "check", "-json", lanPeer, "tcp/7001")
	var c overlay.FirewallCheck
	if jerr := json.Unmarshal([]byte(out), &c); jerr != nil || c.Result != overlay.CheckDroppedInbound || c.Destination.String() != lanPeer {
		t.Fatalf("check %s tcp/7001: %v %v\n%s", lanPeer, err, jerr, out)
	}
}

// TestSubnetWeightedGatewaysFailOver: two gateways carry the LAN with equal weight; the
// gateway the ping flow uses is killed (no CloseTunnel), the flow moves to the other within
// the tunnel timeout (connection_alive_interval 2s + pending_deletion_interval 3s), and
// comes back when the gateway returns. The gateways masquerade onto the LAN, as gateways
// sharing a LAN do, so replies return through the gateway that carried the request.
func TestSubnetWeightedGatewaysFailOver(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	l := newSubnetLab(t, tl, []string{implMeshnode, implMeshnode, implMeshnode}, []bool{false, true, true}, []bool{false, true, true})
	l.confs[0].tunExtra = "  unsafe_routes:\n    - route: " + lanNet + "\n      via:\n        - {gateway: 10.42.0.2, weight: 1}\n        - {gateway: 10.42.0.3, weight: 1}\n"
	for i := 1; i < 3; i++ {
		l.confs[i].inbound = []string{"{port: any, proto: any, host: any, local_cidr: any}"}
		l.hosts[i].ns.NAT(t, "eth1")
	}
	l.start(t)
	client := l.hosts[0]
	carried := []func() (int64, error){nil,
		l.hosts[1].ns.Counter(t, "forward", "ip daddr "+lanHost),
		l.hosts[2].ns.Counter(t, "forward", "ip daddr "+lanHost)}
	if _, err := client.ns.WaitPing(tunnelUpTimeout, lanHost); err != nil {
		t.Fatalf("first ping: %v\n%s", err, client.proc.Tail(30))
	}
	// which gateway carries the flow now: the one whose counter grows over a few pings.
	carrier := func() int {
		var before [3]int64
		for i := 1; i < 3; i++ {
			before[i], _ = carried[i]()
		}
		for range 3 {
			_ = client.ns.Ping(lanHost)
		}
		best := 0
		for i := 1; i < 3; i++ {
			if n, _ := carried[i](); n > before[i] && best == 0 {
				best = i
			}
		}
		return best
	}
	first := carrier()
	if first == 0 {
		t.Fatal("no gateway carried the ping flow")
	}
	other := 3 - first
	t.Logf("the flow goes through %s; killing it", l.hosts[first].name)
	if err := l.hosts[first].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := client.ns.WaitPing(20*time.Second, lanHost); err != nil {
		t.Fatalf("no failover: %v\n%s", err, client.proc.Tail(30))
	}
	took := time.Since(start)
	if got := carrier(); got != other {
		t.Fatalf("after the failover the flow goes through gateway %d, want %d", got, other)
	}
	t.Logf("failover to %s after %v (tunnel timeout 2s + 3s)", l.hosts[other].name, took.Round(time.Millisecond))
	if took > 12*time.Second {
		t.Fatalf("failover took %v, more than the tunnel timeout allows", took)
	}
	l.hosts[first].start(t)
	if err := netns.Eventually(20*time.Second, 500*time.Millisecond, func() error {
		if got := carrier(); got != first {
			return fmt.Errorf("the flow still goes through gateway %d", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("the returning gateway did not take its flow back: %v", err)
	}
	t.Logf("the flow is back on %s after it restarted", l.hosts[first].name)
}
