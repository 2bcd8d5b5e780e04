// Package cli is the command-line plumbing meshnode and mesh-cert share, so both read and
// behave alike: cobra commands, nebula-style single-dash long flags (-config, -name), the
// same `version`/`-version` output, shell completion, one-line errors and exit statuses
// (0 success, 1 failure, 2 a usage mistake).
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshnode/meshnode/internal/version"
)

// ErrUsage marks mistakes in the command line (exit status 2, not 1).
var ErrUsage = errors.New("usage")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return ErrUsage }

// Usagef returns a usage mistake: printed as "Error: ..." plus a pointer to --help, exit 2.
func Usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// ExitCode is returned by a command that has already told the user what went wrong and
// only needs the process to exit with this status (meshnode check's 3, for instance).
type ExitCode int

func (c ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Exit turns a command's exit status into its error: nil for 0.
func Exit(code int) error {
	if code == 0 {
		return nil
	}
	return ExitCode(code)
}

// NewRoot makes a program's root command with the shared settings and the `version` and
// `completion` subcommands.
func NewRoot(name, short string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           name,
		Short:         short,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(&cobra.Command{
		Use:     "version",
		Short:   "Print the version and commit this binary was built from",
		Args:    cobra.NoArgs,
		Example: "  " + name + " version\n  " + name + " -version",
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, version.Line(name))
			return err
		},
	})
	// cobra's completion command (bash, zsh, fish, powershell) needs a sibling to show up.
	root.InitDefaultCompletionCmd()
	return root
}

// Execute runs one command line and returns the exit status. Failures are one line on
// stderr, usage mistakes add a pointer to the command's --help.
func Execute(root *cobra.Command, args []string) int {
	root.SetArgs(NormalizeArgs(root, args))
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var code ExitCode
	if errors.As(err, &code) {
		return int(code)
	}
	stderr := root.ErrOrStderr()
	fmt.Fprintf(stderr, "Error: %v\n", err)
	if errors.Is(err, ErrUsage) || isArgError(err) {
		name := root.Name()
		if cmd != nil {
			name = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
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

// NormalizeArgs lets nebula habits work: "-name x" and "-name=x" become "--name x" and
// "--name=x". pflag would otherwise read "-name" as the shorthand cluster -n -a -m -e.
// Shorthands are single letters (-h, meshnode ping's -c), which stay as they are. A value
// that follows a flag is left alone (so "-name -x" names a host "-x"), nothing after "--"
// is touched, and "-version" at the top becomes the version command.
func NormalizeArgs(root *cobra.Command, args []string) []string {
	if len(args) > 0 && strings.HasPrefix(args[0], "__complete") {
		return args // the shell completion protocol passes words as typed
	}
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
		// Any single-dash word longer than a shorthand is meant as a long flag; rewriting
		// unknown ones too makes cobra say "unknown flag: --x".
		if !hasValue && strings.HasPrefix(a, "-") && len(a) > 2 {
			a = "-" + a
			name = a[2:]
		}
		if strings.HasPrefix(a, "--") {
			n, _, withEq := strings.Cut(name, "=")
			if f := lookup(n); f != nil && !withEq && f.NoOptDefVal == "" {
				expectValue = true
			}
		} else if len(a) == 2 && a[0] == '-' {
			if f := cmd.Flags().ShorthandLookup(a[1:]); f != nil && f.NoOptDefVal == "" {
				expectValue = true
			}
		}
		out = append(out, a)
	}
	return out
}
