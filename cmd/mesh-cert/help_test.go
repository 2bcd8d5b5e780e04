package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/cli/clitest"
)

func TestHelpOfEveryCommandIsComplete(t *testing.T) {
	clitest.CheckHelp(t, newRoot(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, now: time.Now}))
}

func TestCompletion(t *testing.T) {
	r := meshCert(t, fixedNow, "completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "__start_mesh-cert") {
		t.Fatalf("completion bash: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := meshCert(t, fixedNow, "__complete", "sign", "--"); r.code != 0 || !strings.Contains(r.stdout, "--ca-crt") {
		t.Errorf("__complete sign --: exit %d\n%s", r.code, r.stdout)
	}
}
