package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/testenv"
)

// TestDebianPackageInstallsAndRunsAMesh builds the Debian package as `make deb` does and
// installs it with dpkg into a mount namespace of its own (testdata/package-install.sh:
// overlays over /usr, /etc and /var, so the machine's own files and dpkg database never
// change). From the installed files it checks the versions, the completion, the units
// (systemd-analyze verify, when installed), runs three hosts from meshnode@.service's own
// command lines and the README's demo with the installed binaries, then purges the package.
func TestDebianPackageInstallsAndRunsAMesh(t *testing.T) {
	requireNamespaceSuite(t)
	for _, b := range []string{"dpkg", "dpkg-deb", "unshare", "make", "adduser"} {
		testenv.RequireBinary(t, b)
	}
	root := moduleRoot(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	mk := exec.CommandContext(ctx, "make", "-s", "--no-print-directory", "deb", "OUT="+out, "GO="+goTool())
	mk.Dir = root
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "meshnode_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q, want one meshnode_VERSION_ARCH.deb", debs)
	}
	deb := debs[0]
	pkgVersion := strings.TrimSpace(testenv.Run(t, "dpkg-deb", "-f", deb, "Version"))

	contents := testenv.Run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{"./usr/bin/meshnode", "./usr/bin/mesh-cert", "./usr/lib/systemd/system/meshnode@.service",
		"./usr/lib/systemd/system/mesh-cert-serve.service", "./etc/meshnode/node.yml.example",
		"./usr/share/bash-completion/completions/mesh-cert", "./usr/share/doc/meshnode/GETTING-STARTED.md"} {
		if !strings.Contains(contents, want+"\n") {
			t.Errorf("the package lacks %s:\n%s", want, contents)
		}
	}
	if conf := testenv.Run(t, "dpkg-deb", "-I", deb, "conffiles"); !strings.Contains(conf, "/etc/meshnode/node.yml.example") {
		t.Errorf("conffiles: %q", conf)
	}
	// Units must name the installed binaries, not /usr/local/bin.
	if unit := testenv.Run(t, "bash", "-c", "dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/lib/systemd/system/meshnode@.service", "-", deb); !strings.Contains(unit, "ExecStart=/usr/bin/meshnode -config /etc/meshnode/%i.yml") {
		t.Errorf("installed meshnode@.service:\n%s", unit)
	}

	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private",
		"bash", filepath.Join(root, "e2e", "testdata", "package-install.sh"), deb, root)
	cmd.Env = append(os.Environ(), "TRANSFER_MB=10")
	// On timeout, SIGTERM lets the scripts' traps stop their daemons and delete their
	// namespaces; everything else goes with the mount namespace.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	b, err := cmd.CombinedOutput()
	log := string(b)
	if err != nil {
		t.Fatalf("installing and running the package: %v\n%s", err, log)
	}
	for _, want := range []string{"meshnode " + pkgVersion + " install ok installed", "etc-mesh-cert mesh-cert 700", "etc-meshnode root 700",
		"complete -o default -F __start_meshnode meshnode", "/etc/meshnode/node.yml: config OK (host web1, 10.42.1.5)",
		"ping gamma -> beta ok", "reply from gamma: seq=1", "pings answered:   6 of 6", "checksums equal",
		"intruder:         refused", "purged", "package test passed"} {
		if !strings.Contains(log, want) {
			t.Errorf("the run lacks %q:\n%s", want, log)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil && !strings.Contains(log, "units verified") {
		t.Errorf("systemd-analyze is installed but the units were not verified:\n%s", log)
	}
	// `version` and `-version` of both binaries: the package's version and one commit.
	re := regexp.MustCompile(`(?m)^(meshnode|mesh-cert) (\S+) \(commit (\S+?)[,;]`)
	lines := re.FindAllStringSubmatch(log, -1)
	if len(lines) != 4 {
		t.Fatalf("want 4 version lines, got %q:\n%s", lines, log)
	}
	for _, l := range lines {
		if l[2] != pkgVersion || l[3] != lines[0][3] || l[3] == "unknown" {
			t.Errorf("version line %q: want version %s and commit %s", l[0], pkgVersion, lines[0][3])
		}
	}
}
