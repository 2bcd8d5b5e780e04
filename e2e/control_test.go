package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
	"github.com/meshnode/meshnode/overlay"
)

// controlHost is a meshHost whose daemon serves its control socket at sock.
type controlHost struct {
	*meshHost
	sock string
	spec meshSpec
	all  []*meshHost
	ca   *pki
}

// startControlledPair is startMesh for two meshnode hosts, each started with its own
// -control socket (sockets live in the shared filesystem, so the default path would clash).
func startControlledPair(t *testing.T, tl *tools) []*controlHost {
	t.Helper()
	spec := meshSpec{impls: []string{implMeshnode, implMeshnode}, certTool: "nebula-cert", cipher: "aes", mtu: 1300}
	ca := newPKI(t, testenv.RequireBinary(t, "nebula-cert"))
	dir := t.TempDir()
	bin := buildPkg(t, dir, "./cmd/meshnode")
	var hosts []*controlHost
	var all []*meshHost
	for i := range 2 {
		h := &meshHost{name: fmt.Sprintf("h%d", i+1), ns: netns.New(t, fmt.Sprintf("ctl%d", i+1)),
			underlay: fmt.Sprintf("198.18.0.%d", i+1), overlay: fmt.Sprintf("10.42.0.%d", i+1), bin: bin}
		all = append(all, h)
		hosts = append(hosts, &controlHost{meshHost: h, sock: filepath.Join(dir, h.name+".sock"), spec: spec, ca: ca})
	}
	netns.Link(t, all[0].ns, "eth0", all[0].underlay+"/24", all[1].ns, "eth0", all[1].underlay+"/24")
	for _, h := range hosts {
		h.all = all
		crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e", "ops")
		h.writeConfig(t, dir, staticConf(ca.path("ca.crt"), crt, key, spec, h.meshHost, all))
		h.proc = h.ns.Start(t, h.name+"-meshnode", h.bin, "-config", h.config, "-control", h.sock)
	}
	for _, h := range hosts {
		if err := h.proc.WaitLog(10*time.Second, "control socket"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := all[0].ns.WaitPing(tunnelUpTimeout, all[1].overlay); err != nil {
		t.Fatalf("overlay never came up: %v", err)
	}
	return hosts
}

// buildPkg builds a package of this module into dir (the tools helpers of mesh_test.go are
// being reworked; this keeps the suite independent of their signatures).
func buildPkg(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// cli runs `meshnode ARGS -control SOCK` inside the host's namespace.
func (h *controlHost) cli(args ...string) (string, error) {
	return h.ns.RunTimeout(30*time.Second, h.bin, append(args, "-control", h.sock)...)
}

func (h *controlHost) status(t *testing.T) overlay.ControlStatus {
	t.Helper()
	out, err := h.cli("status", "-json")
	if err != nil {
		t.Fatalf("%s: status -json: %v\n%s", h.name, err, out)
	}
	var st overlay.ControlStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json is not JSON: %v\n%s", err, out)
	}
	return st
}

// TestSubcommandsDescribeAndDriveARunningMesh proves, against two meshnode daemons in
// namespaces, that `meshnode status` (table and -json) shows the peer with its name, groups,
// underlay address, handshake time, bytes and cert expiry; that `meshnode ping` by name
// and by VPN IP prints a reply per probe and fails (exit 1) when the peer is gone; that
// `meshnode list --tree` groups the hosts under their network; that `meshnode reload` and
// SIGHUP apply a changed firewall without re-handshaking the tunnel, and that traffic the
// new firewall refuses shows up as inbound firewall drops in status, and `meshnode check`
// (words and -json) says h2's inbound firewall drops it and ICMP passes; and that once the
// daemon stops the subcommands say how to start it.
func TestSubcommandsDescribeAndDriveARunningMesh(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	hosts := startControlledPair(t, tl)
	h1, h2 := hosts[0], hosts[1]
	transfer(t, tl, h1.meshHost, h2.meshHost, 9501, 1<<20, 51)

	out, err := h1.cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"h1 10.42.0.1 (network 10.42.0.0/24), groups e2e,ops", "firewall drops: inbound 0, outbound 0",
		"h2", "10.42.0.2", "e2e,ops", "direct", "198.18.0.2:4242", " ago", "MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("meshnode status:\n%s", out)
	if out, err := h1.cli("status", "-rtt"); err != nil || !strings.Contains(out, "RTT") || !strings.Contains(out, " ms") {
		t.Errorf("status -rtt: %v\n%s", err, out)
	}
	st := h1.status(t)
	if len(st.Peers) != 1 || st.Peers[0].Name != "h2" || st.Peers[0].BytesOut < 1<<20 || st.Peers[0].CertNotAfter.Before(time.Now()) {
		t.Fatalf("status -json peers: %+v", st.Peers)
	}
	handshake := st.Peers[0].Handshake

	for _, target := range []string{"h2", "10.42.0.2"} {
		out, err = h1.cli("ping", target, "-c", "2", "-i", "200ms")
		if err != nil || strings.Count(out, "reply from "+target+": seq=") != 2 || !strings.Contains(out, "2 probes sent, 2 replies, 0% loss") {
			t.Fatalf("ping %s: %v\n%s", target, err, out)
		}
	}
	t.Logf("meshnode ping:\n%s", out)
	if out, err := h1.cli("ping", "h9"); err == nil || !strings.Contains(out, "unknown host h9") {
		t.Fatalf("ping of an unknown name: %v\n%s", err, out)
	}

	out, err = h1.cli("list", "--tree")
	if err != nil || !strings.Contains(out, "10.42.0.0/24 (2 hosts)") || !strings.Contains(out, "├── 10.42.0.1  h1") ||
		!strings.Contains(out, "└── 10.42.0.2  h2  tunnel,static  198.18.0.2:4242") {
		t.Fatalf("list --tree: %v\n%s", err, out)
	}
	t.Logf("meshnode list --tree:\n%s", out)

	// h2 now admits only ICMP: reload through the socket, and TCP from h1 is dropped there.
	c := staticConf(h2.ca.path("ca.crt"), h2.ca.path("h2.crt"), h2.ca.path("h2.key"), h2.spec, h2.meshHost, h2.all)
	c.inbound = []string{"{port: any, proto: icmp, host: any}"}
	h2.writeConfig(t, filepath.Dir(h2.config), c)
	out, err = h2.cli("reload")
	if err != nil || !strings.Contains(out, "firewall: rules replaced") {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if _, err := h1.ns.RunTimeout(20*time.Second, buildPkg(t, t.TempDir(), "./e2e/internal/tcpcheck"), "send", "-to", h2.overlay+":9502", "-bytes", "1000", "-dial-timeout", "2s", "-timeout", "2s"); err == nil {
		t.Fatal("TCP got through a firewall that admits only ICMP")
	}
	// meshnode check names the firewall, the rule and the fix, in words and in JSON.
	out, err = h1.cli("check", "h2", "tcp/9502")
	if exitCode(err) != 1 || !strings.Contains(out, "result: DROPPED by h2's inbound firewall") ||
		!strings.Contains(out, "tunnel    up, direct to 198.18.0.2:4242") || !strings.Contains(out, "to allow it: on h2, add") {
		t.Fatalf("check h2 tcp/9502 (exit %d, want 1): %v\n%s", exitCode(err), err, out)
	}
	t.Logf("meshnode check h2 tcp/9502:\n%s", out)
	out, err = h1.cli("check", "h2", "icmp")
	if err != nil || !strings.Contains(out, "result: ALLOWED") || !strings.Contains(out, "h2 lets it in: inbound[0]") {
		t.Fatalf("check h2 icmp: %v\n%s", err, out)
	}
	out, err = h1.cli("check", "10.42.0.2", "tcp/9502", "-json")
	var fc overlay.FirewallCheck
	if exitCode(err) != 1 || json.Unmarshal([]byte(jsonPart(out)), &fc) != nil || fc.Result != overlay.CheckDroppedInbound ||
		fc.Name != "h2" || fc.Inbound == nil || fc.Inbound.Allowed || !fc.Outbound.Allowed || fc.Traffic != "tcp/9502" {
		t.Fatalf("check -json (exit %d): %v\n%s", exitCode(err), err, out)
	}
	if out, err := h1.cli("check", "h2", "tcp/99999"); exitCode(err) != 2 || !strings.Contains(out, "meshnode check:") {
		t.Fatalf("check with a bad port: exit %d\n%s", exitCode(err), out)
	}
	if st := h2.status(t); st.Drops["firewall_inbound"] == 0 {
		t.Fatalf("no inbound firewall drops counted on h2: %v", st.Drops)
	} else {
		t.Logf("h2 dropped %d inbound packets by firewall", st.Drops["firewall_inbound"])
	}
	if out, err := h1.cli("ping", "h2", "-c", "1"); err != nil || !strings.Contains(out, "proves the tunnel") {
		t.Fatalf("ping after reload: %v\n%s", err, out)
	}

	// SIGHUP does the same as `meshnode reload`.
	c.inbound = nil
	h2.writeConfig(t, filepath.Dir(h2.config), c)
	if err := syscall.Kill(h2.proc.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := h2.proc.WaitLog(10*time.Second, "firewall: rules replaced"); err != nil {
		t.Fatal(err)
	}
	transfer(t, tl, h1.meshHost, h2.meshHost, 9503, 1<<20, 52)
	if st := h1.status(t); len(st.Peers) != 1 || !st.Peers[0].Handshake.Equal(handshake) {
		t.Fatalf("the tunnel was re-made by the reloads: handshake %v, was %v", st.Peers, handshake)
	}
	out, err = h2.cli("reload")
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("reload of an unchanged config: %v\n%s", err, out)
	}

	// With h2 gone, ping fails; with h1's daemon gone, the subcommands say what to do.
	if err := h2.proc.Stop(netns.StopTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h2.sock); !os.IsNotExist(err) {
		t.Errorf("h2's control socket is still there after it stopped: %v", err)
	}
	if out, err := h1.cli("ping", "10.42.0.2", "-c", "2", "-W", "500ms", "-i", "100ms"); err == nil || !strings.Contains(out, "0 replies, 100% loss") {
		t.Fatalf("ping of a stopped peer: %v\n%s", err, out)
	}
	if err := h1.proc.Stop(netns.StopTimeout); err != nil {
		t.Fatal(err)
	}
	out, err = h1.cli("status")
	if err == nil || !strings.Contains(out, "is meshnode running? start it with: meshnode -config node.yml") {
		t.Fatalf("status without a daemon: %v\n%s", err, out)
	}
}

// guideBlock is a shell block of docs/GETTING-STARTED.md that the guide says to run on a
// machine ("# on web1", "# on every host", "# on admin"). A block marked "# on admin, in a
// second terminal" is one the reader leaves running: it must hold exactly one foreground
// daemon and nothing else, so that every other block returns and the blocks can be pasted in
// order (issue 15).
type guideBlock struct {
	where      string
	foreground bool
	lines      []string
}

const secondTerminal = ", in a second terminal"

// foregroundDaemon reports whether a guide line runs a daemon that does not return.
func foregroundDaemon(line string) bool {
	f := strings.Fields(line)
	return (len(f) == 3 && f[0] == "meshnode" && f[1] == "-config") ||
		(len(f) >= 2 && f[0] == "mesh-cert" && f[1] == "serve")
}

// guidePasteable checks that a block can be pasted and returns: foreground daemons only in
// second-terminal blocks, alone, and services started with systemctl.
func guidePasteable(b guideBlock) error {
	var cmds []string
	for _, l := range b.lines {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			cmds = append(cmds, t)
		}
	}
	if b.foreground {
		if len(cmds) != 1 || !foregroundDaemon(cmds[0]) {
			return fmt.Errorf("a second-terminal block must hold just its daemon, not %q", cmds)
		}
		return nil
	}
	for _, c := range cmds {
		if foregroundDaemon(c) {
			return fmt.Errorf("%q runs in the foreground in a block meant to be pasted whole: "+
				"use systemctl, or a block of its own marked %q", c, secondTerminal)
		}
	}
	return nil
}

func guideBlocks(md string) []guideBlock {
	var out []guideBlock
	var cur *guideBlock
	in := false
	for _, l := range strings.Split(md, "\n") {
		switch {
		case !in && strings.TrimSpace(l) == "```sh":
			in, cur = true, nil
		case in && strings.TrimSpace(l) == "```":
			in = false
			if cur != nil {
				out = append(out, *cur)
			}
		case in && cur == nil:
			where, ok := strings.CutPrefix(strings.TrimSpace(l), "# on ")
			if !ok {
				in = false // an illustrative block, not for running
				continue
			}
			where, fg := strings.CutSuffix(where, secondTerminal)
			cur = &guideBlock{where: where, foreground: fg}
		case in:
			cur.lines = append(cur.lines, l)
		}
	}
	return out
}

// TestGettingStartedGuideWorks runs docs/GETTING-STARTED.md: every block marked with the
// machine it runs on is executed there (a namespace per machine on one switch, the guide's
// public addresses mapped to test addresses, /etc/meshnode to a directory per machine, scp
// to a copy), daemons (meshnode, mesh-cert serve) are started where the guide starts them,
// and the guide's checks (meshnode ping, status, list, check, reload, the system ping, a host
// enrolled with a token reaching another) must all succeed.
func TestGettingStartedGuideWorks(t *testing.T) {
	requireNamespaceSuite(t)
	md, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", "GETTING-STARTED.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := guideBlocks(string(md))
	if len(blocks) < 10 {
		t.Fatalf("found %d runnable blocks in the guide", len(blocks))
	}
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	buildPkg(t, bin, "./cmd/meshnode")
	buildPkg(t, bin, "./cmd/mesh-cert")

	// A machine is a namespace on one switch with a working directory; etc stands in for
	// its /etc/meshnode.
	type machine struct {
		ns       *netns.Namespace
		underlay string
		dir, etc string
		sock     string
	}
	names := []string{"lighthouse1", "lighthouse2", "web1", "db1", "admin", "app1", "gw1"}
	everyHost := names[:4] // the machines of "# on every host" (app1 joins later)
	// The office LAN of section 10 becomes 198.19.50.0/24.
	public := map[string]string{"192.0.2.10": "198.18.0.1", "198.51.100.10": "198.18.0.2", "203.0.113.5": "198.18.0.5",
		"192.168.50.": "198.19.50."}
	sw := netns.NewSwitch(t, "gsw")
	// web1 and db1 sit behind NAT routers, as the guide allows ("may be behind NAT").
	natted := map[string]int{"web1": 1, "db1": 2}
	routers := map[string]*netns.Namespace{}
	machines := map[string]*machine{}
	for i, n := range names {
		m := &machine{ns: netns.New(t, fmt.Sprintf("gs%d", i+1)), underlay: fmt.Sprintf("198.18.0.%d", i+1),
			dir: filepath.Join(root, n), sock: filepath.Join(root, n, "meshnode.sock")}
		m.etc = filepath.Join(m.dir, "etc")
		if n == "admin" {
			m.etc = m.dir
		}
		if r, ok := natted[n]; ok {
			// Behind its own router that only masquerades (issue 15): the lighthouses see
			// the router's address, and the hosts cannot address each other.
			router := netns.New(t, fmt.Sprintf("gsr%d", r))
			routers[n] = router
			sw.Attach(t, router, "wan0", fmt.Sprintf("198.18.0.%d/24", 10+r))
			m.underlay = fmt.Sprintf("198.19.%d.2", r)
			netns.Link(t, router, "lan0", fmt.Sprintf("198.19.%d.1/24", r), m.ns, "eth0", m.underlay+"/24")
			m.ns.Route(t, "default", "via", fmt.Sprintf("198.19.%d.1", r))
			router.MasqueradeNAT(t, "wan0")
		} else {
			sw.Attach(t, m.ns, "eth0", m.underlay+"/24")
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		machines[n] = m
	}
	// Section 10's LAN: gw1 on it and a plain host (no overlay) whose default route is gw1.
	lan := netns.NewSwitch(t, "glan")
	lan.Attach(t, machines["gw1"].ns, "eth1", "198.19.50.1/24")
	printer := netns.New(t, "gsprn")
	lan.Attach(t, printer, "eth0", "198.19.50.20/24")
	printer.Route(t, "default", "via", "198.19.50.1")
	subst := func(where, s string) string {
		for from, to := range public {
			s = strings.ReplaceAll(s, from, to)
		}
		return strings.ReplaceAll(s, "/etc/meshnode", machines[where].etc)
	}
	// scp, as the guide uses it, copies to the machine named by the destination.
	scp := "scp() { local dest=\"${@: -1}\" host; host=\"${dest#*@}\"; host=\"${host%%:*}\"; case \"$host\" in\n"
	for _, n := range names {
		scp += fmt.Sprintf("  %s|%s) cp \"${@:1:$#-1}\" %q/ ;;\n", n, machines[n].underlay, machines[n].etc)
	}
	scp += "  *) echo \"scp: unknown machine $host\" >&2; return 1 ;;\nesac; }\n"

	var outputs []string
	runScript := func(where, script string) {
		t.Helper()
		if strings.TrimSpace(script) == "" {
			return
		}
		m := machines[where]
		prelude := "set -euo pipefail\nexport PATH=" + bin + ":$PATH\n" + scp + fmt.Sprintf("cd %q\n", m.dir) +
			fmt.Sprintf("meshnode() { case \"${1:-}\" in status|ping|check|list|reload) local s=$1; shift; command meshnode \"$s\" -control %q \"$@\" ;; enroll) command meshnode \"$@\" ;; *) command meshnode -control %q \"$@\" ;; esac; }\n", m.sock, m.sock)
		out, err := m.ns.RunTimeout(2*time.Minute, "bash", "-c", prelude+script)
		if err != nil {
			t.Fatalf("on %s:\n%s\n--- failed: %v\n%s", where, script, err, out)
		}
		outputs = append(outputs, out)
		t.Logf("on %s:\n%s\n---\n%s", where, strings.TrimSpace(script), out)
	}
	// `systemctl enable --now meshnode@NAME` runs the installed unit's ExecStartPre and
	// ExecStart, with %i as NAME, in the machine's namespace.
	unitPre, unitStart := unitExec(t, filepath.Join(moduleRoot(t), "examples", "systemd", "meshnode@.service"))
	// daemon starts what the guide runs as a service (or, in a second terminal, in the
	// foreground) and waits until it is ready; it reports whether line was such a command.
	daemon := func(where, line string, foreground bool, before func()) bool {
		t.Helper()
		m := machines[where]
		f := strings.Fields(line)
		var args []string
		var ready string
		switch {
		case len(f) == 4 && f[0] == "systemctl" && f[1] == "enable" && f[2] == "--now" && strings.HasPrefix(f[3], "meshnode@"):
			before()
			expand := func(cmd string) []string {
				c := strings.Fields(subst(where, strings.ReplaceAll(cmd, "%i", strings.TrimPrefix(f[3], "meshnode@"))))
				c[0] = filepath.Join(bin, filepath.Base(c[0]))
				return c
			}
			pre := expand(unitPre)
			out, err := m.ns.RunTimeout(time.Minute, pre[0], pre[1:]...)
			if err != nil {
				t.Fatalf("on %s: %s: ExecStartPre %q failed: %v\n%s", where, line, pre, err, out)
			}
			outputs = append(outputs, out)
			start := append(expand(unitStart), "-control", m.sock)
			p := m.ns.Start(t, where+"-"+f[3], start[0], start[1:]...)
			if err := p.WaitLog(15*time.Second, "control socket"); err != nil {
				t.Fatal(err)
			}
			t.Logf("on %s: %s: ran %q, then started %q", where, line, pre, start)
			return true
		case len(f) > 0 && f[0] == "systemctl":
			t.Fatalf("on %s: the guide test does not know what %q does", where, line)
		case foregroundDaemon(line) && !foreground:
			t.Fatalf("on %s: %q stays in the foreground, so the rest of its block never runs when pasted", where, line)
		case len(f) == 3 && f[0] == "meshnode" && f[1] == "-config":
			args, ready = []string{"-config", f[2], "-control", m.sock}, "control socket"
		case len(f) == 4 && f[0] == "mesh-cert" && f[1] == "serve" && f[2] == "-config":
			cfg := f[3]
			if !filepath.IsAbs(cfg) {
				cfg = filepath.Join(m.dir, cfg)
			}
			args, ready = []string{"serve", "-config", cfg}, "CA service listening"
		default:
			return false
		}
		before()
		p := m.ns.Start(t, where+"-"+f[0], filepath.Join(bin, f[0]), args...)
		if err := p.WaitLog(15*time.Second, ready); err != nil {
			t.Fatal(err)
		}
		return true
	}
	for _, b := range blocks {
		if err := guidePasteable(b); err != nil {
			t.Fatalf("on %s: %v", b.where, err)
		}
		targets := []string{b.where}
		if b.where == "every host" {
			targets = everyHost
		} else if machines[b.where] == nil {
			t.Fatalf("the guide runs a block on %q, which is not one of its machines", b.where)
		}
		for _, where := range targets {
			var script strings.Builder
			heredoc := ""
			for _, l := range b.lines {
				l = subst(where, l)
				if heredoc == "" {
					if daemon(where, l, b.foreground, func() { runScript(where, script.String()); script.Reset() }) {
						continue
					}
					if i := strings.Index(l, "<<'"); i >= 0 {
						heredoc = strings.TrimSuffix(l[i+3:], "'")
					}
				} else if strings.TrimSpace(l) == heredoc {
					heredoc = ""
				}
				script.WriteString(l + "\n")
			}
			runScript(where, script.String())
		}
	}
	all := strings.Join(outputs, "\n")
	// Behind the two masquerades, web1's `meshnode status` in section 5 showed db1 relayed.
	if !strings.Contains(all, "relay via lighthouse") {
		t.Errorf("the guide's status output does not show web1's tunnel to db1 relayed through a lighthouse")
	}
	// And it stays relayed: direct probes ran all along (every RelayProbeInterval, both
	// ends), but each one that reaches the other host's router leaves a conntrack entry
	// there that gives that host's next mapping towards us another port, so no probe ever
	// finds an open mapping (GETTING-STARTED section 5 says so).
	web1 := machines["web1"]
	if err := netns.Eventually(3*overlay.RelayProbeInterval, time.Second, func() error {
		out, err := web1.ns.RunTimeout(10*time.Second, filepath.Join(bin, "meshnode"), "status", "-json", "-control", web1.sock)
		if err != nil {
			return fmt.Errorf("status: %v: %s", err, out)
		}
		var st overlay.ControlStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Name == "db1" && p.Path == "relayed" && time.Since(p.Handshake) > 2*overlay.RelayProbeInterval {
				return nil
			}
			if p.Name == "db1" && p.Path != "relayed" {
				t.Errorf("web1's tunnel to db1 went %s behind two plain masquerades; the guide says it stays relayed", p.Path)
				return nil
			}
		}
		return fmt.Errorf("web1's tunnel to db1 is not yet two probe rounds old: %+v", st.Peers)
	}); err != nil {
		t.Error(err)
	}
	if ct, err := routers["db1"].Run("cat", "/proc/net/nf_conntrack"); err == nil {
		t.Logf("db1's router's conntrack table (web1's router is 198.18.0.11):\n%s", ct)
	}
	for _, want := range []string{"config OK (host lighthouse1, 10.42.0.1)", "reply from 10.42.1.2: seq=", "reply from db1: seq=1",
		"10.42.0.0/16", "db1", "firewall: rules replaced", "reply from 10.42.1.1: seq=",
		"db1 is 10.42.1.2 (says lighthouse 10.42.0.", // web1 had no tunnel to db1: a lighthouse named it
		"config OK (host gw1, 10.42.3.1)",            // the unit's ExecStartPre ran
		"route 198.19.50.0/24 added", "bytes from 198.19.50.20", "route 198.19.50.0/24 via 10.42.3.1 up", "behind gateway gw1", "ALLOWED"} {
		if !strings.Contains(all, want) {
			t.Errorf("the guide's output lacks %q", want)
		}
	}
}

// TestReloadKeepsATCPStreamAcrossFirewallChangeAndRenewedCert proves that a TCP stream
// through the tunnel runs on, intact, while the receiving host reloads on SIGHUP with a
// renewed certificate (new key) and narrower firewall rules that still admit the stream, and
// the sending host reloads changed rules through `meshnode reload`.
func TestReloadKeepsATCPStreamAcrossFirewallChangeAndRenewedCert(t *testing.T) {
	requireNamespaceSuite(t)
	testenv.RequireBinary(t, "tc")
	tl := newTools(t)
	hosts := startControlledPair(t, tl)
	h1, h2 := hosts[0], hosts[1]
	tcpcheck := buildPkg(t, t.TempDir(), "./e2e/internal/tcpcheck")
	// 16 Mbit/s out of h1: 24 MB take about 12 s, long enough to reload in the middle.
	h1.ns.MustRun(t, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "32kb", "latency", "400ms")

	const size = 24 << 20
	addr := h2.overlay + ":9601"
	srv := h2.ns.Start(t, "tcpcheck-serve", tcpcheck, "serve", "-listen", addr, "-count", "1")
	if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
		t.Fatal(err)
	}
	snd := h1.ns.Start(t, "tcpcheck-send", tcpcheck, "send", "-to", addr, "-bytes", fmt.Sprint(size), "-seed", "61", "-timeout", "90s")
	if err := netns.Eventually(10*time.Second, 100*time.Millisecond, func() error {
		if st := h2.status(t); len(st.Peers) == 0 || st.Peers[0].BytesIn < 1<<20 {
			return fmt.Errorf("stream not flowing yet: %+v", st.Peers)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	oldFP := h2.status(t).Fingerprint

	// h2: a renewed certificate (same identity, new key) and rules that admit only the stream.
	for _, f := range []string{"h2.crt", "h2.key"} {
		if err := os.Remove(h2.ca.path(f)); err != nil {
			t.Fatal(err)
		}
	}
	h2.ca.sign(t, "h2", h2.overlay+"/24", "e2e", "ops")
	c := staticConf(h2.ca.path("ca.crt"), h2.ca.path("h2.crt"), h2.ca.path("h2.key"), h2.spec, h2.meshHost, h2.all)
	c.inbound = []string{"{port: any, proto: icmp, host: any}", "{port: 9601, proto: tcp, group: e2e}"}
	h2.writeConfig(t, filepath.Dir(h2.config), c)
	if err := syscall.Kill(h2.proc.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := h2.proc.WaitLog(10*time.Second, "firewall: rules replaced"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h2.proc.Log(), "pki.cert: new certificate") {
		t.Fatalf("SIGHUP did not swap in the renewed certificate:\n%s", h2.proc.Tail(20))
	}
	if fp := h2.status(t).Fingerprint; fp == oldFP {
		t.Fatal("status still shows the old certificate after the reload")
	}

	// h1: different rules through the control socket.
	c1 := staticConf(h1.ca.path("ca.crt"), h1.ca.path("h1.crt"), h1.ca.path("h1.key"), h1.spec, h1.meshHost, h1.all)
	c1.inbound = []string{"{port: any, proto: icmp, host: any}", "{port: 22, proto: tcp, group: ops}"}
	h1.writeConfig(t, filepath.Dir(h1.config), c1)
	if out, err := h1.cli("reload"); err != nil || !strings.Contains(out, "firewall: rules replaced") {
		t.Fatalf("reload on h1: %v\n%s", err, out)
	}
	if snd.Exited() {
		t.Fatal("the stream ended before the reloads were done: make it longer")
	}

	if err := snd.Wait(100 * time.Second); err != nil {
		t.Fatalf("the stream broke across the reloads: %v\n%s\nreceiver: %s", err, snd.Log(), srv.Log())
	}
	if err := srv.Wait(10 * time.Second); err != nil {
		t.Fatalf("receiver: %v\n%s", err, srv.Log())
	}
	sent, received := lineWith(snd.Log(), "sent "), lineWith(srv.Log(), "received ")
	if !strings.HasPrefix(sent, fmt.Sprintf("bytes=%d ", size)) || sent != received {
		t.Fatalf("sender %q, receiver %q", sent, received)
	}
	t.Logf("%d MB intact across SIGHUP (renewed cert, new rules) on h2 and meshnode reload on h1: %s", size>>20, sent)
	if _, err := h1.ns.WaitPing(5*time.Second, h2.overlay); err != nil {
		t.Fatalf("after the reloads: %v", err)
	}
}

// TestGettingStartedGuideNamesKnownMachines checks, without root, that every runnable block
// of the guide says where it runs and that its heredocs are closed, so a broken edit of the
// guide fails even where the namespace suite cannot run.
func TestGettingStartedGuideNamesKnownMachines(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", "GETTING-STARTED.md"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"admin": true, "every host": true, "lighthouse1": true, "lighthouse2": true, "web1": true, "db1": true, "app1": true, "gw1": true}
	blocks := guideBlocks(string(md))
	if len(blocks) < 10 {
		t.Fatalf("only %d runnable blocks", len(blocks))
	}
	foreground := 0
	for i, b := range blocks {
		if !known[b.where] {
			t.Errorf("block %d runs on %q, which the guide test does not set up", i, b.where)
		}
		if err := guidePasteable(b); err != nil {
			t.Errorf("block %d (on %s): %v", i, b.where, err)
		}
		if b.foreground {
			foreground++
		}
		open := ""
		for _, l := range b.lines {
			if open == "" {
				if j := strings.Index(l, "<<'"); j >= 0 {
					open = strings.TrimSuffix(l[j+3:], "'")
				}
			} else if strings.TrimSpace(l) == open {
				open = ""
			}
		}
		if open != "" {
			t.Errorf("block %d (on %s): heredoc %s is not closed", i, b.where, open)
		}
	}
	// Section 7's CA service is the one daemon left in the foreground; the rest are units.
	if foreground != 1 {
		t.Errorf("%d blocks run in a second terminal, want 1 (mesh-cert serve in section 7)", foreground)
	}
	if !strings.Contains(string(md), "systemctl enable --now meshnode@node") {
		t.Error("the guide starts no meshnode as a service")
	}
	bad := guideBlock{where: "web1", lines: []string{"cat > x <<'EOF'", "EOF", "meshnode -config /etc/meshnode/node.yml"}}
	if guidePasteable(bad) == nil {
		t.Error("a block ending in a foreground daemon passed as pasteable")
	}
}

// unitExec reads a systemd unit's ExecStartPre and ExecStart command lines.
func unitExec(t *testing.T, path string) (pre, start string) {
	t.Helper()
	for _, l := range strings.Split(mustRead(t, path), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStartPre="); ok {
			pre = v
		} else if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			start = v
		}
	}
	if pre == "" || start == "" {
		t.Fatalf("%s: no ExecStartPre or ExecStart", path)
	}
	return pre, start
}
