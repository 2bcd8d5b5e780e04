package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/pgtest"
)

// TestTokenMeshLosesNoPingWhileACAReplicaIsDown: the CA service is two replicas on one
// PostgreSQL; a lighthouse and two hosts join by tokens (which name both replicas) with 90 s
// certificates. Replica 0, the one every node reached first, is SIGKILLed for 70 s, long
// enough that every node's renewal falls inside; the nodes renew through replica 1, and
// pings both ways at 10 pkt/s lose nothing. Replica 0 then comes back on the same database.
func TestTokenMeshLosesNoPingWhileACAReplicaIsDown(t *testing.T) {
	requireNamespaceSuite(t)
	cluster := pgtest.Start(t)
	m := newTokenMesh(t, "r", "lighthouse", "h1", "h2")
	lh, h1, h2 := m.hosts[0], m.hosts[1], m.hosts[2]
	m.makeCA("replicas e2e CA", "ca")
	m.writeReplicaConfigs(tokenOneCA, keysCertLife, 2, cluster.CreateDB(t))
	r0 := m.startReplica(0)
	m.startReplica(1)

	tokens := map[*tokenHost]string{h1: m.invite(h1), h2: m.invite(h2), lh: m.invite(lh, "-ip", lh.overlay)}
	for _, h := range m.hosts {
		m.enroll(h, tokens[h], tokenRenewal)
		y, err := os.ReadFile(h.config)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(y), "https://"+tokenCAAddr+":8443,https://"+tokenCAAddr+":8444") {
			t.Fatalf("%s's renewal.url does not name both replicas:\n%s", h.name, y)
		}
		m.start(h)
	}
	m.waitRenewalScheduled(m.hosts)
	for _, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		if _, err := d[0].ns.WaitPing(tunnelUpTimeout, d[1].overlay); err != nil {
			t.Fatalf("%s cannot reach %s: %v\n%s", d[0].name, d[1].name, err, d[0].proc.Tail(20))
		}
	}

	const window, down = 85 * time.Second, 70 * time.Second
	pings := int(window / (100 * time.Millisecond))
	out := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		wg.Go(func() {
			out[i], errs[i] = d[0].ns.RunTimeout(window+60*time.Second, "ping", "-n", "-i", "0.1", "-c", strconv.Itoa(pings), "-W", "1", d[1].overlay)
		})
	}
	time.Sleep(5 * time.Second)
	renewed := func() []int {
		var n []int
		for _, h := range m.hosts {
			n = append(n, strings.Count(h.proc.Log(), "certificate renewed"))
		}
		return n
	}
	before := renewed()
	if err := r0.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(down)
	during := renewed()
	m.startReplica(0)
	wg.Wait()

	for i, h := range m.hosts {
		t.Logf("%s renewed %d times while replica 0 was down", h.name, during[i]-before[i])
		if during[i] == before[i] {
			t.Errorf("%s did not renew while replica 0 was down:\n%s", h.name, h.proc.Tail(20))
		}
	}
	for i, d := range [][2]*tokenHost{{h1, h2}, {h2, h1}} {
		got := pingReceived(out[i])
		t.Logf("ping %s -> %s: %d/%d", d[0].name, d[1].name, got, pings)
		if got != pings {
			t.Errorf("%s -> %s lost %d of %d pings with a CA replica down (%v)\n%s", d[0].name, d[1].name, pings-got, pings, errs[i], lastLines(out[i], 5))
		}
	}
	// Both replicas answer on the database afterwards (the admin socket of replica 1).
	list, err := exec.Command(m.meshCert, "list", "-config", filepath.Join(m.caDir, "ca-1.yml")).CombinedOutput()
	if err != nil || strings.Count(string(list), " enrolled ") != 3 {
		t.Errorf("list through replica 1: %v\n%s", err, list)
	}
}
