package main

import (
	"io"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/internal/cli/clitest"
	"github.com/meshnode/meshnode/internal/version"
)

func TestHelpOfEveryCommandIsComplete(t *testing.T) {
	clitest.CheckHelp(t, newRoot(io.Discard, io.Discard))
}

func TestVersionAndCompletion(t *testing.T) {
	want := version.Line("meshnode") + "\n"
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		if code, out, errOut := runCLI(args...); code != 0 || out != want {
			t.Errorf("%q: exit %d, %q %q; want %q", args, code, out, errOut, want)
		}
	}
	code, out, errOut := runCLI("completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_meshnode") || errOut != "" {
		t.Fatalf("completion bash: exit %d, stderr %q", code, errOut)
	}
	// The shell asks the binary itself; flags of subcommands complete.
	if code, out, _ := runCLI("__complete", "ping", "--"); code != 0 || !strings.Contains(out, "--count") || !strings.Contains(out, "--control") {
		t.Errorf("__complete ping --: exit %d\n%s", code, out)
	}
	if code, out, _ := runCLI("__complete", "st"); code != 0 || !strings.Contains(out, "status") {
		t.Errorf("__complete st: exit %d\n%s", code, out)
	}
}
