package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDaemonOnAnotherOSExitsAtOnceWithThePlatformSentence plays a non-Linux system: the
// daemon stops before reading its config (which here does not even exist) with the sentence
// the README uses, while -test still checks a config.
func TestDaemonOnAnotherOSExitsAtOnceWithThePlatformSentence(t *testing.T) {
	for _, goos := range []string{"darwin", "windows", "freebsd"} {
		t.Run(goos, func(t *testing.T) {
			old := daemonGOOS
			daemonGOOS = goos
			t.Cleanup(func() { daemonGOOS = old })
			start := time.Now()
			code, out, errOut := runCLI("-config", filepath.Join(t.TempDir(), "missing.yml"))
			if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 ||
				!strings.Contains(errOut, "meshnode: the meshnode daemon runs only on Linux") || !strings.Contains(errOut, "this is "+goos+"/") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("took %v to refuse", d)
			}
			// -test is a config check and works anywhere: here it reads (and misses) the file.
			if code, _, errOut := runCLI("-config", filepath.Join(t.TempDir(), "missing.yml"), "-test"); code != 1 || strings.Contains(errOut, "only on Linux") {
				t.Fatalf("-test on %s: exit %d, %q", goos, code, errOut)
			}
		})
	}
	if err := checkDaemonPlatform("linux"); err != nil {
		t.Fatal(err)
	}
}

// TestEveryCommandBuildsForMacOSAndWindows backs the README's platform list: both commands
// build for the systems where only mesh-cert and meshnode's config check are supported.
func TestEveryCommandBuildsForMacOSAndWindows(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds take a while the first time")
	}
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	for _, goos := range []string{"darwin", "windows"} {
		cmd := exec.Command(goBin, "build", "-o", os.DevNull, "./cmd/meshnode", "./cmd/mesh-cert")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build: %v\n%s", goos, err, out)
		}
	}
}
