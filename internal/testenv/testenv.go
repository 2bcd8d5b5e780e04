// Package testenv decides whether a test that needs root or an external binary may run.
// Outside CI such a test skips with the reason; under CI=true it fails instead, so a suite
// that CI is meant to run can never silently skip there.
package testenv

import (
	"os"
	"os/exec"
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
