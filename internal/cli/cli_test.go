package cli_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/internal/cli"
	"github.com/meshnode/meshnode/internal/cli/clitest"
)

func testRoot(out *bytes.Buffer) *cobra.Command {
	root := cli.NewRoot("prog", "Do things", out, out)
	ping := &cobra.Command{Use: "ping HOST", Short: "Ping a host", Example: "  prog ping h -c 2 -control x",
		RunE: func(*cobra.Command, []string) error { return cli.Exit(3) }}
	ping.Flags().IntP("count", "c", 1, "number of probes")
	ping.Flags().String("control", "", "the socket")
	root.AddCommand(ping)
	return root
}

func TestNormalizeArgsKeepsShorthandsAndTheirValues(t *testing.T) {
	root := testRoot(&bytes.Buffer{})
	for _, c := range []struct{ in, want []string }{
		{[]string{"ping", "h", "-c", "-5", "-control", "s"}, []string{"ping", "h", "-c", "-5", "--control", "s"}},
		{[]string{"ping", "-control", "-c"}, []string{"ping", "--control", "-c"}},
		{[]string{"-version"}, []string{"version"}},
		{[]string{"__complete", "ping", "-co"}, []string{"__complete", "ping", "-co"}},
	} {
		if got := cli.NormalizeArgs(root, c.in); !slices.Equal(got, c.want) {
			t.Errorf("NormalizeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestExecuteExitStatuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
	}{{[]string{"version"}, 0}, {[]string{"ping", "h"}, 3}, {[]string{"ping", "-bogus"}, 2}, {[]string{"nosuch"}, 2}} {
		var out bytes.Buffer
		if got := cli.Execute(testRoot(&out), c.args); got != c.code {
			t.Errorf("%q: exit %d, want %d\n%s", c.args, got, c.code, out.String())
		}
	}
}

// recorder collects what CheckHelp reports.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCheckHelpFindsPlaceholdersAndWrongExamples(t *testing.T) {
	var ok recorder
	clitest.CheckHelp(&ok, testRoot(&bytes.Buffer{}))
	if len(ok.errs) > 0 {
		t.Fatalf("a good tree: %q", ok.errs)
	}
	root := testRoot(&bytes.Buffer{})
	bad := &cobra.Command{Use: "bad", Short: "TODO", Example: "  prog bad -name x", RunE: func(*cobra.Command, []string) error { return nil }}
	bad.Flags().Bool("json", false, "")
	bad.Flags().Bool("tree", false, "Draws a tree.")
	root.AddCommand(bad, &cobra.Command{Use: "quiet", Run: func(*cobra.Command, []string) {}})
	var r recorder
	clitest.CheckHelp(&r, root)
	all := strings.Join(r.errs, "\n")
	for _, want := range []string{"prog bad: Short has a placeholder", "flag --json is not described", "flag --tree",
		"uses -name, which the command does not have", "prog quiet: empty Short", "prog quiet: no Example"} {
		if !strings.Contains(all, want) {
			t.Errorf("CheckHelp did not report %q; it said:\n%s", want, all)
		}
	}
}
