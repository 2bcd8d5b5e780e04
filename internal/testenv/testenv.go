// Package testenv decides whether a test that needs root or an external binary may run.
// Outside CI such a test skips with the reason; under CI=true it fails instead, so a suite
// that CI is meant to run can never silently skip there.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where nothing may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("required under CI=true: %s", why)
	}
	t.Skip(why)
}

// RequireRoot skips (or fails under CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (network namespaces, TUN devices)")
	}
}

// RequireBinary returns the path of an external program, skipping (or failing under CI)
// when it is not installed. `bash scripts/install-deps.sh` installs the ones tests use.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, name+" not installed (run: bash scripts/install-deps.sh)")
	}
	return p
}

// SkipShort skips long suites under `go test -short`; CI runs without -short.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("long suite; skipped with -short")
	}
}

// NebulaV2Version is the Nebula release that the v2 certificate tests hold meshnode to.
// Debian's nebula 1.6.1 stays on PATH; this one lives in a tools directory.
const NebulaV2Version = "1.11.1"

// ToolsDir is where scripts/install-deps.sh puts the programs it builds with go install:
// $MESHNODE_TOOLS if set, else .tools in the module root.
func ToolsDir() string {
	if d := os.Getenv("MESHNODE_TOOLS"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ".tools"
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".tools")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ".tools"
		}
		dir = parent
	}
}

// RequireNebulaV2 returns the path of name ("nebula" or "nebula-cert") at NebulaV2Version
// in ToolsDir, skipping (or failing under CI) when it is missing or another version.
func RequireNebulaV2(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), "nebula-"+NebulaV2Version, name)
	how := " (run: bash scripts/install-deps.sh, which builds it with go install)"
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, name+" "+NebulaV2Version+" not found at "+p+how)
		return ""
	}
	out, err := exec.Command(p, "-version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), NebulaV2Version) {
		skipOrFail(t, p+" is not version "+NebulaV2Version+": "+strings.TrimSpace(string(out))+how)
		return ""
	}
	return p
}

// RequireNebulaExampleConfig returns the path of Nebula NebulaV2Version's own
// examples/config.yml in the Go module cache, where building nebula with go install
// (scripts/install-deps.sh) leaves the module; skips (or fails under CI) when it is not there.
func RequireNebulaExampleConfig(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			skipOrFail(t, "go env GOMODCACHE: "+err.Error())
			return ""
		}
		cache = strings.TrimSpace(string(out))
	}
	p := filepath.Join(cache, "github.com", "slackhq", "nebula@v"+NebulaV2Version, "examples", "config.yml")
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "Nebula "+NebulaV2Version+"'s examples/config.yml not in the module cache at "+p+
			" (run: bash scripts/install-deps.sh, which builds nebula with go install)")
		return ""
	}
	return p
}
