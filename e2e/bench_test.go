package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/testenv"
)

// TestBenchScriptMeasuresRawNebulaAndMeshnode runs scripts/bench.sh briefly (one round, 1 s
// per iperf3 run) for the raw veth, nebula, meshnode and, where a Nebula 1.12 binary is at
// hand ($NEBULA12 or /work/refbin/nebula12), nebula12 with its offloads, and checks that every
// row of the Markdown table it writes holds measurements, the RTT under load included. It
// proves the script, not any speed.
func TestBenchScriptMeasuresRawNebulaAndMeshnode(t *testing.T) {
	requireNamespaceSuite(t)
	for _, b := range []string{"iperf3", "nebula", "nebula-cert"} {
		testenv.RequireBinary(t, b)
	}
	meshnode := newTools(t).impl(t, implMeshnode)
	out := filepath.Join(t.TempDir(), "bench.md")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	scenarios := []string{"raw", "nebula", "meshnode"}
	n12 := os.Getenv("NEBULA12")
	if n12 == "" {
		n12 = "/work/refbin/nebula12"
	}
	if _, err := os.Stat(n12); err == nil {
		scenarios = append(scenarios, "nebula12")
	}
	args := append([]string{filepath.Join(moduleRoot(t), "scripts", "bench.sh"), "-r", "1", "-t", "1", "-o", out}, scenarios...)
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Env = append(os.Environ(), "MESHNODE="+meshnode)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // let its trap clean up
	cmd.WaitDelay = 15 * time.Second
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench.sh: %v\n%s", err, log)
	}
	table, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no table written: %v\n%s", err, log)
	}
	for _, sc := range scenarios {
		row := ""
		for _, l := range strings.Split(string(table), "\n") {
			if strings.HasPrefix(l, "| "+sc+" ") {
				row = l
			}
		}
		cells := strings.Split(strings.Trim(row, "| "), " | ")
		// scenario, TCP 1, TCP 4, RTT, RTT under load, ...
		if len(cells) < 5 || cells[1] == "—" || cells[2] == "—" || cells[3] == "—" || cells[4] == "—" {
			t.Errorf("%s row lacks throughput or RTT: %q\n%s\n%s", sc, row, table, log)
		}
	}
}
