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
)

// TestDemoScriptShowsAThreeHostMesh runs scripts/demo.sh (the README's `make demo`) end to end
// with this module's meshnode and mesh-cert, and once more with nebula standing in for
// meshnode (the script's MESHNODE knob), which tells a broken script from a broken daemon:
// namespaces, certs, pings between all pairs, the checked transfer, the refused intruder and
// the clean-up.
func TestDemoScriptShowsAThreeHostMesh(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	type variant struct{ name, node, cert string }
	variants := []variant{
		{"meshnode", tl.impl(t, implMeshnode), tl.certTool(t, "mesh-cert")},
		{"nebula-standin", tl.impl(t, implNebula), tl.certTool(t, "mesh-cert")},
	}
	root := moduleRoot(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
			cmd.Env = append(os.Environ(), "DEMO_SKIP_BUILD=1", "TRANSFER_MB=20",
				"MESHNODE="+v.node, "MESH_CERT="+v.cert)
			// On timeout, SIGTERM lets the script's trap stop its daemons and delete its
			// namespaces; SIGKILL follows only if that hangs.
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			cmd.WaitDelay = 15 * time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("demo.sh: %v\n%s", err, out)
			}
			for _, want := range []string{"pings answered:   6 of 6", "checksums equal", "arrived intact", "intruder:         refused"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("demo output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
