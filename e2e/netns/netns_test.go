package netns_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
)

func requireHost(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	testenv.RequireBinary(t, "ping")
}

func TestVethPairCarriesPingBetweenNamespaces(t *testing.T) {
	requireHost(t)
	a, b := netns.New(t, "a"), netns.New(t, "b")
	netns.Link(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	if _, err := a.WaitPing(5*time.Second, "198.18.0.2"); err != nil {
		t.Fatal(err)
	}
}

func TestSwitchJoinsThreeHostsOnOneSegment(t *testing.T) {
	requireHost(t)
	sw := netns.NewSwitch(t, "sw")
	hosts := make([]*netns.Namespace, 3)
	for i := range hosts {
		hosts[i] = netns.New(t, fmt.Sprintf("h%d", i))
		sw.Attach(t, hosts[i], "eth0", fmt.Sprintf("198.18.0.%d/24", i+1))
	}
	for i, h := range hosts {
		for j := range hosts {
			if i == j {
				continue
			}
			if _, err := h.WaitPing(5*time.Second, fmt.Sprintf("198.18.0.%d", j+1)); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestNamespacesAreDeletedAfterTheTest(t *testing.T) {
	requireHost(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		name = netns.New(t, "gone").Name
	})
	if netns.Exists(name) {
		t.Fatalf("namespace %s still exists after its test ended", name)
	}
}

func TestProcessIsRunInsideTheNamespaceAndStopped(t *testing.T) {
	requireHost(t)
	n := netns.New(t, "p")
	n.MustIP(t, "link", "add", "mnbr7", "type", "bridge")
	// The process sees the namespace's devices, not the host's.
	p := n.Start(t, "lister", "sh", "-c", "ip -o link; echo ready; exec sleep 60")
	if err := p.WaitLog(5*time.Second, "ready"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Log(), "mnbr7") {
		t.Fatalf("process does not see the namespace's mnbr7:\n%s", p.Log())
	}
	if err := p.Stop(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Fatal("process still running after Stop")
	}
}

func TestKillEndsAProcessThatIgnoresSIGTERM(t *testing.T) {
	requireHost(t)
	n := netns.New(t, "k")
	p := n.Start(t, "stubborn", "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
	if err := p.WaitLog(5*time.Second, "ready"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Stop(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v", d)
	}
}

func TestWaitLogReportsAnExitedProcess(t *testing.T) {
	requireHost(t)
	n := netns.New(t, "e")
	p := n.Start(t, "quitter", "sh", "-c", "echo bye; exit 3")
	start := time.Now()
	err := p.WaitLog(5*time.Second, "never printed")
	if time.Since(start) > 2*time.Second {
		t.Errorf("WaitLog waited %v for a process that had exited", time.Since(start))
	}
	if !errors.Is(err, netns.ErrExited) {
		t.Fatalf("WaitLog = %v, want ErrExited", err)
	}
}

func TestEventuallyStopsAtTheDeadline(t *testing.T) {
	calls := 0
	start := time.Now()
	err := netns.Eventually(300*time.Millisecond, 50*time.Millisecond, func() error {
		calls++
		return errors.New("not yet")
	})
	if err == nil || time.Since(start) > 2*time.Second || calls < 2 {
		t.Fatalf("err=%v after %v and %d calls", err, time.Since(start), calls)
	}
	calls = 0
	if err := netns.Eventually(time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNATRouterLetsHostsOutButNotIn(t *testing.T) {
	requireHost(t)
	testenv.RequireBinary(t, "nft")
	testenv.RequireBinary(t, "sysctl")
	sw := netns.NewSwitch(t, "wan")
	public := netns.New(t, "pub")
	sw.Attach(t, public, "eth0", "198.18.0.1/24")
	router := netns.New(t, "r")
	sw.Attach(t, router, "wan0", "198.18.0.11/24")
	host := netns.New(t, "lan")
	netns.Link(t, router, "lan0", "198.19.1.1/24", host, "eth0", "198.19.1.2/24")
	host.Route(t, "default", "via", "198.19.1.1")
	router.NAT(t, "wan0")
	toPublic := router.Counter(t, "forward", "ip daddr 198.18.0.1 icmp type echo-request")

	// The public host has no route to 198.19.1.0/24, so its replies can only come back
	// because the router rewrote the source address: a successful ping proves the NAT.
	if _, err := host.WaitPing(5*time.Second, "198.18.0.1"); err != nil {
		t.Fatalf("host behind NAT cannot reach the public host: %v", err)
	}
	if err := public.Ping("198.19.1.2"); err == nil {
		t.Fatal("public host reached the LAN host directly")
	}
	if n, err := toPublic(); err != nil || n == 0 {
		t.Fatalf("forward counter = %d, %v; want the pings counted", n, err)
	}
}

func TestDropRandomlyLosesSomePacketsButNotAll(t *testing.T) {
	requireHost(t)
	testenv.RequireBinary(t, "nft")
	a, b := netns.New(t, "a"), netns.New(t, "b")
	netns.Link(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	b.DropRandomly(t, 50, "icmp type echo-request")
	out, _ := a.RunTimeout(20*time.Second, "ping", "-n", "-q", "-c", "100", "-i", "0.01", "-W", "1", "198.18.0.2")
	var sent, got int
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "packets transmitted") {
			fmt.Sscanf(l, "%d packets transmitted, %d received", &sent, &got)
		}
	}
	if sent != 100 || got < 20 || got > 80 {
		t.Fatalf("with 50%% loss: %d of %d answered\n%s", got, sent, out)
	}
}
