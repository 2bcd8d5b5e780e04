// Package netns builds throw-away test hosts out of Linux network namespaces: namespaces joined
// by veth pairs or by a bridge in a "switch" namespace, commands and long-running daemons run
// inside them, and polling helpers with deadlines. Everything a test creates is removed in
// t.Cleanup, also when the test fails. If the test process itself is killed (go test's
// -timeout), its daemons die with it (Pdeathsig) and the next run deletes its namespaces.
//
// It is for root-only end-to-end suites. It never touches the machine's own namespace: veth
// pairs are created directly inside the test namespaces, and every address and route lives there.
// Underlay addresses belong in 198.18.0.0/15 (RFC 2544 benchmarking space).
package netns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Prefix starts the name of every namespace this package creates, followed by the test
// process's PID and a counter, so parallel test processes never clash and leftovers of a
// killed run can be recognised (see New).
const Prefix = "mne2e"

// CommandTimeout bounds every short command (ip, ping, ...) this package runs.
const CommandTimeout = 20 * time.Second

var counter atomic.Uint32

// Namespace is one network namespace: a test host or a switch.
type Namespace struct {
	Name string
}

// New creates a fresh namespace with loopback up and deletes it when the test ends. label is
// a short word that makes the name readable in `ip netns list` (e.g. "a", "lh", "sw").
func New(t testing.TB, label string) *Namespace {
	t.Helper()
	sweepStale()
	name := fmt.Sprintf("%s%d-%d-%s", Prefix, os.Getpid(), counter.Add(1), label)
	if out, err := ipCmd("netns", "add", name); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &Namespace{Name: name}
	t.Cleanup(func() { n.Delete(t) })
	n.MustIP(t, "link", "set", "lo", "up")
	return n
}

// Delete removes the namespace. Processes still inside keep it alive, so daemons must be
// stopped first; t.Cleanup's last-in-first-out order does that for daemons started with Start.
func (n *Namespace) Delete(t testing.TB) {
	if out, err := ipCmd("netns", "del", n.Name); err != nil && !strings.Contains(out, "No such file") {
		t.Logf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// sweepStale deletes namespaces this package made in test processes that no longer exist
// (a run killed by a timeout cannot clean up after itself).
func sweepStale() {
	out, err := ipCmd("netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) {
			continue
		}
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(f[0], Prefix), "-")
		if pid, err := strconv.Atoi(pidStr); !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidStr); err == nil {
			continue // that test process is still running
		}
		ipCmd("netns", "del", f[0])
	}
}

// Exists reports whether a namespace of that name exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

func ipCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// IP runs `ip -n NS args...` and returns its combined output.
func (n *Namespace) IP(args ...string) (string, error) {
	return ipCmd(append([]string{"-n", n.Name}, args...)...)
}

// MustIP is IP that fails the test on error.
func (n *Namespace) MustIP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.IP(args...)
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Command returns a command that runs inside the namespace (via `ip netns exec`, which execs
// the program in place, so the command's PID is the program's PID).
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a short command inside the namespace with CommandTimeout and returns its combined
// output.
func (n *Namespace) Run(name string, args ...string) (string, error) {
	return n.RunTimeout(CommandTimeout, name, args...)
}

// RunTimeout is Run with its own time limit.
func (n *Namespace) RunTimeout(d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, d, err)
	}
	return strings.TrimSpace(buf.String()), err
}

// MustRun is Run that fails the test on error.
func (n *Namespace) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// AddAddr assigns an address (CIDR notation) to a device and brings the device up.
func (n *Namespace) AddAddr(t testing.TB, dev, cidr string) {
	t.Helper()
	n.MustIP(t, "addr", "add", cidr, "dev", dev)
	n.MustIP(t, "link", "set", dev, "up")
}

// Link joins two namespaces with a veth pair named devA (in a) and devB (in b) and assigns
// the given addresses (CIDR; empty means none). Both ends are up.
func Link(t testing.TB, a *Namespace, devA, cidrA string, b *Namespace, devB, cidrB string) {
	t.Helper()
	if out, err := ipCmd("link", "add", devA, "netns", a.Name, "type", "veth",
		"peer", "name", devB, "netns", b.Name); err != nil {
		t.Fatalf("veth %s/%s <-> %s/%s: %v: %s", a.Name, devA, b.Name, devB, err, out)
	}
	for _, e := range []struct {
		ns        *Namespace
		dev, cidr string
	}{{a, devA, cidrA}, {b, devB, cidrB}} {
		if e.cidr != "" {
			e.ns.MustIP(t, "addr", "add", e.cidr, "dev", e.dev)
		}
		e.ns.MustIP(t, "link", "set", e.dev, "up")
	}
}

// Switch is a namespace holding a bridge; hosts attached to it share one L2 segment.
type Switch struct {
	NS     *Namespace
	ports  int
	bridge string
}

// NewSwitch creates a switch namespace with a bridge "br0".
func NewSwitch(t testing.TB, label string) *Switch {
	t.Helper()
	s := &Switch{NS: New(t, label), bridge: "br0"}
	s.NS.MustIP(t, "link", "add", s.bridge, "type", "bridge")
	s.NS.MustIP(t, "link", "set", s.bridge, "up")
	return s
}

// Attach connects host to the switch with a veth pair; the host's end is named dev and gets
// cidr. It returns the switch-side port name.
func (s *Switch) Attach(t testing.TB, host *Namespace, dev, cidr string) string {
	t.Helper()
	s.ports++
	port := fmt.Sprintf("p%d", s.ports)
	Link(t, host, dev, cidr, s.NS, port, "")
	s.NS.MustIP(t, "link", "set", port, "master", s.bridge)
	return port
}

// Eventually calls cond every interval until it returns nil or timeout passes; it returns
// cond's last error, wrapped with the time waited, when the deadline passes first.
func Eventually(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().Add(interval).After(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Ping sends one ICMP echo from the namespace and waits at most one second for the reply.
func (n *Namespace) Ping(addr string) error {
	out, err := n.RunTimeout(5*time.Second, "ping", "-n", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, n.Name, err, lastLine(out))
	}
	return nil
}

// WaitPing waits until a ping from the namespace to addr succeeds and returns how long it took.
func (n *Namespace) WaitPing(timeout time.Duration, addr string) (time.Duration, error) {
	start := time.Now()
	err := Eventually(timeout, 100*time.Millisecond, func() error { return n.Ping(addr) })
	return time.Since(start), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Route adds a route in the namespace, e.g. Route(t, "default", "via", "198.19.1.1").
func (n *Namespace) Route(t testing.TB, args ...string) {
	t.Helper()
	n.MustIP(t, append([]string{"route", "add"}, args...)...)
}

// Sysctl sets a sysctl inside the namespace (net.* keys are per namespace).
func (n *Namespace) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.MustRun(t, "sysctl", "-q", "-w", key+"="+value)
}

// NAT turns the namespace into a router that masquerades everything leaving through wanDev:
// IPv4 forwarding on, an nftables source NAT rule, and unsolicited packets arriving on wanDev
// dropped (its own table, gone with the namespace). Linux keeps the source port when it can
// and only lets replies in: the NAT that UDP hole punching is meant to cross. The drop is what
// a home router does, and it matters: an unsolicited packet that reached the router itself
// would leave a conntrack entry behind that forces the next outgoing mapping onto another port.
func (n *Namespace) NAT(t testing.TB, wanDev string) {
	t.Helper()
	n.Sysctl(t, "net.ipv4.ip_forward", "1")
	rules := fmt.Sprintf(`table ip e2enat {
	chain outbound {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "%[1]s" masquerade
	}
	chain inbound {
		type filter hook input priority filter; policy accept;
		iifname "%[1]s" ct state new drop
	}
	chain forwarded {
		type filter hook forward priority filter; policy accept;
		iifname "%[1]s" ct state new drop
	}
}
`, wanDev)
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", n.Name, err, out)
	}
}

// MasqueradeNAT turns the namespace into a router that only masquerades what leaves through
// wanDev (IPv4 forwarding and one nftables source NAT rule; no inbound filter): the plainest
// Linux NAT, as many cloud NAT gateways and hand-made routers are. Unlike NAT, it lets an
// unsolicited packet reach the router itself, where it leaves a conntrack entry that makes
// the router pick another port for the next outgoing mapping to that sender's address:
// whichever host's punch arrives first spoils the other side's mapping.
func (n *Namespace) MasqueradeNAT(t testing.TB, wanDev string) {
	t.Helper()
	n.Sysctl(t, "net.ipv4.ip_forward", "1")
	rules := fmt.Sprintf("table ip e2enat {\n\tchain outbound {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname %q masquerade\n\t}\n}\n", wanDev)
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", n.Name, err, out)
	}
}

// Counter adds an nftables rule that counts packets matching expr (nft syntax, e.g.
// `ip daddr 198.18.0.12 udp dport 4242`) at a netfilter hook ("forward" for what a router
// passes on, "input" for what reaches the namespace's own sockets) and returns a function
// reading its byte count. Suites use it to prove which path traffic took, or that nothing came.
func (n *Namespace) Counter(t testing.TB, hook, expr string) func() (int64, error) {
	t.Helper()
	table := fmt.Sprintf("e2ecount%d", counter.Add(1))
	rules := fmt.Sprintf("table ip %s {\n\tchain counted {\n\t\ttype filter hook %s priority filter - 1; policy accept;\n\t\t%s counter\n\t}\n}\n", table, hook, expr)
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft counter in %s: %v\n%s", n.Name, err, out)
	}
	return func() (int64, error) {
		out, err := n.Run("nft", "list", "table", "ip", table)
		if err != nil {
			return 0, fmt.Errorf("nft list table %s: %v: %s", table, err, out)
		}
		_, rest, ok := strings.Cut(out, " bytes ")
		if !ok {
			return 0, fmt.Errorf("no counter in %q", out)
		}
		return strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
	}
}

// DropRandomly makes the namespace drop about percent of the incoming packets that match expr
// (nft syntax, e.g. `udp dport 4242`), as a lossy underlay would. nftables is used because
// the netem qdisc is not available on every kernel.
func (n *Namespace) DropRandomly(t testing.TB, percent int, expr string) {
	t.Helper()
	rules := fmt.Sprintf("table ip e2eloss%d {\n\tchain incoming {\n\t\ttype filter hook input priority filter; policy accept;\n\t\t%s numgen random mod 100 < %d drop\n\t}\n}\n",
		counter.Add(1), expr, percent)
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft loss in %s: %v\n%s", n.Name, err, out)
	}
}

// Block drops what the namespace forwards that matches expr (nft syntax) until the returned
// function lifts the block. The drop comes before source NAT, so it leaves no mapping behind.
func (n *Namespace) Block(t testing.TB, expr string) (lift func()) {
	t.Helper()
	table := fmt.Sprintf("e2eblock%d", counter.Add(1))
	rules := fmt.Sprintf("table ip %s {\n\tchain blocked {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t%s drop\n\t}\n}\n", table, expr)
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft block in %s: %v\n%s", n.Name, err, out)
	}
	return func() { n.MustRun(t, "nft", "delete", "table", "ip", table) }
}
