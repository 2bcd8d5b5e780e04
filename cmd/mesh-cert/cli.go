package main

import (
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/internal/cli"
)

// env is everything a command needs from the outside world.
type env struct {
	stdout, stderr io.Writer
	now            func() time.Time
}

// errUsage marks mistakes in the command line (exit status 2, not 1).
var errUsage = cli.ErrUsage

func usagef(format string, args ...any) error { return cli.Usagef(format, args...) }

// run executes one command line and returns the exit status: 0, 1 on failure, 2 on a
// usage mistake. Failures are one line on stderr.
func run(args []string, e *env) int { return cli.Execute(newRoot(e), args) }

func newRoot(e *env) *cobra.Command {
	root := cli.NewRoot("mesh-cert", "Make and inspect meshnode (Nebula v1 and v2) certificates; run the CA service", e.stdout, e.stderr)
	// Without Run, cobra prints help for a bare "mesh-cert", which is what we want.
	root.AddCommand(newCACmd(e), newSignCmd(e), newKeygenCmd(e), newPrintCmd(e), newVerifyCmd(e),
		newServeCmd(e), newInviteCmd(e), newListCmd(e), newRevokeCmd(e), newStoreCmd(e), newConsoleAdminCmd(e))
	addExamples(root)
	return root
}

// normalizeArgs rewrites nebula-cert habits (-name x) for pflag; see cli.NormalizeArgs.
func normalizeArgs(root *cobra.Command, args []string) []string { return cli.NormalizeArgs(root, args) }
