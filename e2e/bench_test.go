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
// per iperf3 run) for the raw veth, nebula and meshnode, and checks that every row of the
// Markdown table it writes holds measurements. It proves the script, not any speed.
func TestBenchScriptMeasuresRawNebulaAndMeshnode(t *testing.T) {
	requireNamespaceSuite(t)
	for _, b := range []string{"iperf3", "nebula", "nebula-cert"} {
		testenv.RequireBinary(t, b)
	}
	meshnode := newTools(t).impl(t, implMeshnode)
	out := filepath.Join(t.TempDir(), "bench.md")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(moduleRoot(t), "scripts", "bench.sh"),
		"-r", "1", "-t", "1", "-o", out, "raw", "nebula", "meshnode")
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
	for _, sc := range []string{"raw", "nebula", "meshnode"} {
		row := ""
		for _, l := range strings.Split(string(table), "\n") {
			if strings.HasPrefix(l, "| "+sc+" ") {
				row = l
			}
		}
		cells := strings.Split(strings.Trim(row, "| "), " | ")
		if len(cells) < 3 || cells[1] == "—" || cells[2] == "—" {
			t.Errorf("%s row has no throughput: %q\n%s\n%s", sc, row, table, log)
		}
	}
}
