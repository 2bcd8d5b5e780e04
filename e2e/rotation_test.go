package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// Timing of the rotation suite: certificates live 60 s and are renewed at 2/3 (40 s, plus
// up to 2 s of jitter), so every step of the rotation takes one round of renewals, at most
// about 45 s; the pings run across all three steps.
const (
	rotCertLife = 60 * time.Second
	rotWindow   = 170 * time.Second
)

// TestCARotationAcrossRenewalsLosesNoPing runs the operator's CA rotation of
// docs/GETTING-STARTED.md (section 8) on a live mesh: a CA service, a lighthouse and two
// hosts joined by tokens, with certificates from CA-old and pings both ways between the
// hosts at 10 pkt/s for the whole run. Step 1 adds CA-new (made with `mesh-cert ca`) without
// its key and restarts the service; step 2 puts CA-new first with its key, CA-old kept
// without; step 3 removes CA-old. After each restart the test waits as the operator does,
// until `mesh-cert list` shows every node renewed since, and checks every node's files: after
// step 1 all trust both CAs and still hold CA-old certs; during step 2 h1 (enrolled 6 s
// before h2, so it renews first) runs on a CA-new cert while h2 is on a CA-old one, for
// several seconds of pings; after step 2 every cert is from CA-new; after step 3 every node
// trusts CA-new only. Not one ping is lost, and no node cuts a tunnel.
func TestCARotationAcrossRenewalsLosesNoPing(t *testing.T) {
	requireNamespaceSuite(t)
	testStart := time.Now()
	m := newTokenMesh(t, "r", "lighthouse", "h1", "h2")
	nodes := m.hosts
	h1, h2 := nodes[1], nodes[2] // nodes[0] is the lighthouse

	oldCA := m.makeCA("rotation CA old", "ca")
	m.writeCAConfig(tokenOneCA, rotCertLife)
	m.startService()

	// A cert that would start before its CA starts at the CA's start instead, which would
	// give every node enrolled in the CA's first seconds the same expiry: wait that out.
	// Then h2 enrolls 6 s after h1, so it renews about 6 s after h1 in every round.
	time.Sleep(7 * time.Second)
	for _, h := range nodes {
		if h == h2 {
			time.Sleep(6 * time.Second)
		}
		m.enroll(h, m.invite(h, "-ip", h.overlay), tokenRenewal)
		m.start(h)
	}
	for _, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		if _, err := d[0].ns.WaitPing(tunnelUpTimeout, d[1].overlay); err != nil {
			t.Fatalf("%s cannot reach %s: %v\n%s\n%s", d[0].name, d[1].name, err, d[0].proc.Tail(20), d[1].proc.Tail(20))
		}
	}
	t.Logf("set up in %v", time.Since(testStart).Round(time.Second))

	// Pings both ways for the whole window.
	pings := int(rotWindow / (100 * time.Millisecond))
	pingStart := time.Now()
	pingOut := make([]string, 2)
	pingErr := make([]error, 2)
	var pingWG sync.WaitGroup
	for i, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		pingWG.Add(1)
		go func() {
			defer pingWG.Done()
			pingOut[i], pingErr[i] = d[0].ns.RunTimeout(rotWindow+60*time.Second, "ping", "-n", "-i", "0.1", "-c", strconv.Itoa(pings), "-W", "1", d[1].overlay)
		}()
	}
	time.Sleep(3 * time.Second)

	issuer := func(h *tokenHost) string { return m.readCert(h).Details.Issuer }
	trusted := func(h *tokenHost) []string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(h.dir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool, err := cert.NewPoolFromPEM(b)
		if err != nil {
			t.Fatalf("%s: ca.crt: %v", h.name, err)
		}
		var names []string
		for _, c := range pool.CAs() {
			names = append(names, c.Details.Name)
		}
		return names
	}
	// step edits ca.yml, restarts the service (SIGTERM, then a start a second later, so every
	// renewal stamped after the stop is the new service's) and waits as the operator does:
	// until `mesh-cert list` shows every node renewed since. during runs while it waits.
	step := func(name, caList string, during func()) {
		t.Helper()
		if err := m.svc.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now().UTC().Truncate(time.Second)
		time.Sleep(1100 * time.Millisecond)
		m.writeCAConfig(caList, rotCertLife)
		m.startService()
		start := time.Now()
		for {
			out, err := exec.Command(m.meshCert, "list", "-config", m.caYML).CombinedOutput()
			if err != nil {
				t.Fatalf("mesh-cert list: %v\n%s", err, out)
			}
			left := rotNotRenewedSince(string(out), stopped, nodes)
			if len(left) == 0 {
				t.Logf("%s: every node renewed within %v of the restart", name, time.Since(start).Round(time.Second))
				return
			}
			if time.Since(start) > rotCertLife {
				t.Fatalf("%s: %v did not renew within %v of the restart:\n%s\nservice: %s", name, left, rotCertLife, out, m.svc.Tail(20))
			}
			if during != nil {
				during()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Step 1: trust CA-new everywhere before it signs.
	newCA := m.makeCA("rotation CA new", "ca-new")
	step("step 1 (CA-new trusted)", "ca:\n  - crt: ca.crt\n    key: ca.key\n  - crt: ca-new.crt", nil)
	for _, h := range nodes {
		if got := trusted(h); strings.Join(got, ",") != "rotation CA old,rotation CA new" {
			t.Fatalf("after step 1 %s trusts %v", h.name, got)
		}
		if issuer(h) != oldCA.Fingerprint() {
			t.Fatalf("after step 1 %s's cert is not from CA-old", h.name)
		}
	}

	// Step 2: CA-new signs. Watch for h1 on a CA-new cert while h2 is still on CA-old.
	var mixedFrom, mixedTo time.Time
	step("step 2 (CA-new signs)", "ca:\n  - crt: ca-new.crt\n    key: ca-new.key\n  - crt: ca.crt", func() {
		if issuer(h1) == newCA.Fingerprint() && issuer(h2) == oldCA.Fingerprint() {
			if mixedFrom.IsZero() {
				mixedFrom = time.Now()
			}
			mixedTo = time.Now()
		}
	})
	for _, h := range nodes {
		if issuer(h) != newCA.Fingerprint() {
			t.Fatalf("after step 2 %s's cert is not from CA-new", h.name)
		}
	}
	mixed := mixedTo.Sub(mixedFrom)
	t.Logf("step 2: h1 on a CA-new cert and h2 on a CA-old cert for %v", mixed.Round(100*time.Millisecond))
	if mixedFrom.IsZero() || mixed < time.Second {
		t.Fatalf("step 2: h1 on CA-new with h2 on CA-old seen for %v only: the mixed tunnel was not exercised", mixed)
	}

	// Step 3: retire CA-old.
	step("step 3 (CA-old retired)", "ca:\n  - crt: ca-new.crt\n    key: ca-new.key", nil)
	for _, h := range nodes {
		if got := trusted(h); strings.Join(got, ",") != "rotation CA new" {
			t.Fatalf("after step 3 %s trusts %v", h.name, got)
		}
	}
	stepsDone := time.Since(pingStart)
	if stepsDone > rotWindow-10*time.Second {
		t.Fatalf("the rotation took %v of the %v ping window: too little traffic after it to judge", stepsDone.Round(time.Second), rotWindow)
	}
	t.Logf("rotation done %v into the ping window", stepsDone.Round(time.Second))

	pingWG.Wait()
	for i, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		got := pingReceived(pingOut[i])
		t.Logf("ping %s -> %s: %d/%d (%s)", d[0].name, d[1].name, got, pings, lineWith(pingOut[i], "rtt"))
		if got != pings {
			t.Errorf("ping %s -> %s lost %d of %d across the rotation (%v)\n%s\n%s\n%s", d[0].name, d[1].name, pings-got, pings,
				pingErr[i], lastLines(pingOut[i], 5), d[0].proc.Tail(30), d[1].proc.Tail(30))
		}
	}
	// No tunnel was cut on the way: every node moved each tunnel onto its renewed cert
	// before the old one expired, and no peer's cert became untrusted.
	for _, h := range nodes {
		if l := logLine(h.proc.Log(), "closing tunnel"); l != "" {
			t.Errorf("%s cut a tunnel during the rotation: %s", h.name, l)
		}
	}
	t.Logf("total %v", time.Since(testStart).Round(time.Second))
}

var rotRenewedRE = regexp.MustCompile(`renewed=(\S+)`)

// rotNotRenewedSince lists the nodes whose `mesh-cert list` line shows no renewal after t.
func rotNotRenewedSince(list string, t time.Time, nodes []*tokenHost) []string {
	var left []string
	for _, h := range nodes {
		ok := false
		for _, l := range strings.Split(list, "\n") {
			if !strings.HasPrefix(l, h.name+"\t") {
				continue
			}
			if m := rotRenewedRE.FindStringSubmatch(l); m != nil {
				if at, err := time.Parse(time.RFC3339, m[1]); err == nil && at.After(t) {
					ok = true
				}
			}
		}
		if !ok {
			left = append(left, h.name)
		}
	}
	return left
}
