package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

var statsImpls = []string{implNebula, implMeshnode}

// pendingStatsImpls are implementations known not to pass yet; E2E_PENDING=1 runs them.
var pendingStatsImpls = []string{}

// statsConfig is Nebula's stats section as a Nebula user writes it (Nebula requires the
// interval; the endpoint listens on the namespace's own loopback).
const statsConfig = `stats:
  type: prometheus
  listen: 127.0.0.1:8080
  path: /metrics
  namespace: meshe2e
  interval: 1s
`

// TestPrometheusEndpointServesMetricsFromTheStatsSection proves that `stats: {type:
// prometheus, listen, path}` in an unchanged Nebula config makes the daemon serve metrics in
// the Prometheus text format while its tunnels carry traffic.
func TestPrometheusEndpointServesMetricsFromTheStatsSection(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	impls := statsImpls
	if os.Getenv("E2E_PENDING") == "1" {
		impls = append(append([]string{}, statsImpls...), pendingStatsImpls...)
	}
	for _, impl := range impls {
		t.Run(impl, func(t *testing.T) {
			hosts := startMesh(t, tl, meshSpec{impls: []string{impl, impl}, certTool: "nebula-cert", cipher: "aes", extra: statsConfig})
			transfer(t, tl, hosts[0], hosts[1], 9400, 1<<20, 40)
			var body string
			err := netns.Eventually(10*time.Second, 200*time.Millisecond, func() error {
				out, err := hosts[0].ns.Run(tl.tcpcheck(t), "get", "-url", "http://127.0.0.1:8080/metrics")
				if err != nil {
					return fmt.Errorf("%v: %s", err, lastLines(out, 3))
				}
				body = out
				return nil
			})
			if err != nil {
				t.Fatalf("metrics endpoint: %v", err)
			}
			if !strings.Contains(body, "# TYPE ") || !strings.Contains(body, "# HELP ") {
				t.Fatalf("not Prometheus text format:\n%s", lastLines(body, 20))
			}
			if impl == implMeshnode {
				// internal/prom, not client_golang, writes these: the tunnel's traffic, and the
				// process figures under client_golang's names, which dashboards expect.
				for _, re := range []string{
					`(?m)^meshnode_packets_total\{direction="out"\} [1-9][0-9]*$`,
					`(?m)^meshnode_bytes_total\{direction="in"\} [1-9][0-9]*$`,
					`(?m)^meshnode_tunnels [1-9]$`,
					`(?m)^process_resident_memory_bytes [1-9][0-9.e+]*$`,
					`(?m)^go_goroutines [1-9][0-9]*$`,
				} {
					if !regexp.MustCompile(re).MatchString(body) {
						t.Errorf("no line matching %s in\n%s", re, body)
					}
				}
			}
			t.Logf("%d lines of metrics", strings.Count(body, "\n"))
		})
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
