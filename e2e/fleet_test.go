package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/fleet"
)

// TestFleetGeneratorJoinsAndQueriesALighthouse runs the fleet load generator (issue 18) at
// small scale against a meshnode and a nebula 1.6.1 lighthouse, each alone in a namespace
// with the simulated hosts on its loopback: every host joins, the lighthouse takes every
// host's update (queries for other simulated hosts return their addresses), and the
// figures scripts/fleet.sh tabulates are filled and sane.
func TestFleetGeneratorJoinsAndQueriesALighthouse(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	gen := tl.build(t, "./cmd/mesh-fleet")
	pki := filepath.Join(t.TempDir(), "pki")
	const hosts = 300
	if out, err := exec.Command(gen, "-gen", "-pki", pki, "-n", fmt.Sprint(hosts)).CombinedOutput(); err != nil {
		t.Fatalf("mesh-fleet -gen: %v\n%s", err, out)
	}
	for _, impl := range []string{implMeshnode, implNebula} {
		t.Run(impl, func(t *testing.T) {
			bin := tl.impl(t, impl)
			ns := netns.New(t, "fleet")
			ns.MustIP(t, "link", "set", "lo", "up")
			conf := filepath.Join(t.TempDir(), "lh.yml")
			// The same config serves both: Nebula's keys only. The lighthouse listens on
			// loopback so that meshnode files the hosts' loopback addresses.
			os.WriteFile(conf, []byte(fmt.Sprintf(`pki: {ca: %[1]s/ca.crt, cert: %[1]s/lighthouse.crt, key: %[1]s/lighthouse.key}
static_host_map: {}
lighthouse: {am_lighthouse: true}
listen: {host: 127.0.0.1, port: 4242}
tun: {dev: fleet0, mtu: 1300}
logging: {level: info}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
`, pki)), 0o644)
			lh := ns.Start(t, "lighthouse", bin, "-config", conf)
			if err := netns.Eventually(10*time.Second, 100*time.Millisecond, func() error {
				out, err := ns.Run("ss", "-Huln", "sport = :4242")
				if err != nil || strings.TrimSpace(out) == "" {
					return fmt.Errorf("not listening yet (%v)", err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			resFile := filepath.Join(t.TempDir(), "result.json")
			out, err := ns.RunTimeout(45*time.Second, gen, "-o", resFile, "-pki", pki, "-n", fmt.Sprint(hosts), "-pid", fmt.Sprint(lh.PID()),
				"-label", impl, "-milestones", "100", "-query-rate", "300", "-query-time", "2s", "-limit", "40s")
			if err != nil {
				t.Fatalf("mesh-fleet: %v\n%s", err, out)
			}
			var r fleet.Result
			b, err := os.ReadFile(resFile)
			if err == nil {
				err = json.Unmarshal(b, &r)
			}
			if err != nil {
				t.Fatalf("result: %v\n%s", err, out)
			}
			j := r.Join
			if j == nil || j.Joined != hosts || j.Failed != 0 {
				t.Fatalf("join: %+v", j)
			}
			if len(r.Milestones) != 2 || r.Milestones[0].Hosts != 100 || r.Milestones[1].Hosts != hosts {
				t.Fatalf("milestones %+v, want at 100 and %d hosts", r.Milestones, hosts)
			}
			// The lighthouse grew and worked: /proc was read for the right process.
			if m := r.Milestones[1]; m.Proc.RSSKB <= r.Base.RSSKB || m.Proc.CPU <= r.Base.CPU || j.CPU <= 0 {
				t.Fatalf("lighthouse samples: base %+v, at %d hosts %+v", r.Base, hosts, m.Proc)
			}
			q := r.Query
			if q == nil || q.Sent < 400 {
				t.Fatalf("queries: %+v", q)
			}
			// Every answer names the queried host's own address and port: its update was
			// taken. A few may be late on a loaded machine, none wrong.
			if q.Correct != q.Answered || q.Answered < q.Sent*98/100 {
				t.Fatalf("queries: %d sent, %d answered, %d with the host's address", q.Sent, q.Answered, q.Correct)
			}
			if q.P50ms <= 0 || q.P50ms > 50 || q.P99ms < q.P50ms || q.P99ms > 1000 {
				t.Fatalf("query latency p50 %.2f ms, p99 %.2f ms", q.P50ms, q.P99ms)
			}
			if j.P50ms <= 0 || j.P99ms > 5000 {
				t.Fatalf("handshake latency p50 %.2f ms, p99 %.2f ms", j.P50ms, j.P99ms)
			}
			t.Logf("%s: %d hosts in %.1fs (%.0f/s, %.0f per lighthouse CPU s), RSS %d KiB; %d queries, p50 %.2f ms p99 %.2f ms",
				impl, j.Joined, j.Seconds, j.Rate, j.PerCPUs, r.Milestones[1].Proc.RSSKB, q.Answered, q.P50ms, q.P99ms)
		})
	}
}
