package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is overridden at link time (-ldflags "-X main.version=...").
var version = "dev"

// env is everything a command needs from the outside world.
type env struct {
	stdout, stderr io.Writer
	now            func() time.Time
}

// errUsage marks mistakes in the command line (exit status 2, not 1).
var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run executes one command line and returns the exit status: 0, 1 on failure, 2 on a
// usage mistake. Failures are one line on stderr.
func run(args []string, e *env) int {
	root := newRoot(e)
	root.SetArgs(normalizeArgs(root, args))
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	fmt.Fprintf(e.stderr, "Error: %v\n", err)
	if errors.Is(err, errUsage) || isArgError(err) {
		name := "mesh-cert"
		if cmd != nil {
			name = cmd.CommandPath()
		}
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", name)
		return 2
	}
	return 1
}

// isArgError recognises cobra's own argument-count and command-name errors, which it
// returns as plain errors (flag errors arrive as usageError via SetFlagErrorFunc).
func isArgError(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.Contains(s, "arg(s)")
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "mesh-cert",
		Short:         "Make and inspect meshnode (Nebula v1 and v2) certificates",
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without Run, cobra prints help for a bare "mesh-cert", which is what we want.
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newCACmd(e), newSignCmd(e), newKeygenCmd(e), newPrintCmd(e), newVerifyCmd(e), newVersionCmd(e),
		newServeCmd(e), newInviteCmd(e), newListCmd(e), newRevokeCmd(e))
	return root
}

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(e.stdout, "Version: %s\n", version)
			return err
		},
	}
}

// normalizeArgs lets nebula-cert habits work: "-name x" and "-name=x" become "--name x"
// and "--name=x". pflag would otherwise read "-name" as the shorthand cluster -n -a -m -e.
// A value that follows a flag is left alone (so "-name -x" names a host "-x"), and nothing
// after "--" is touched.
func normalizeArgs(root *cobra.Command, args []string) []string {
	cmd := root
	if len(args) > 0 {
		if c, _, err := root.Find(args[:1]); err == nil && c != nil {
			cmd = c
		}
	}
	cmd.InitDefaultHelpFlag()
	lookup := func(name string) *pflag.Flag {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f
		}
		if name == "version" && cmd == root {
			return nil
		}
		return cmd.InheritedFlags().Lookup(name)
	}
	out := make([]string, 0, len(args))
	expectValue := false
	for i, a := range args {
		if expectValue {
			expectValue = false
			out = append(out, a)
			continue
		}
		if a == "--" {
			return append(out, args[i:]...)
		}
		if (a == "-version" || a == "--version") && cmd == root {
			out = append(out, "version")
			continue
		}
		name, hasValue := strings.CutPrefix(a, "--")
		// We define no shorthand flags but -h, so any longer single-dash word is meant
		// as a long flag; rewriting unknown ones too makes cobra say "unknown flag: --x".
		if !hasValue && strings.HasPrefix(a, "-") && len(a) > 2 {
			a = "-" + a
			name = a[2:]
		}
		if strings.HasPrefix(a, "--") {
			n, _, withEq := strings.Cut(name, "=")
			if f := lookup(n); f != nil && !withEq && f.NoOptDefVal == "" {
				expectValue = true
			}
		}
		out = append(out, a)
	}
	return out
}
