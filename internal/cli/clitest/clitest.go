// Package clitest checks a program's command tree for what a user reads in --help: no
// placeholders, a one-line summary for every command, every flag described, examples that
// use real flags, and the shared style of meshnode and mesh-cert. Both binaries' tests run it.
package clitest

import (
	"bytes"
	"regexp"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// placeholder finds text that was meant to be replaced.
var placeholder = regexp.MustCompile(`(?i)\b(TODO|FIXME|XXX|TBD)\b|lorem ipsum|<placeholder>`)

// exampleFlag finds the flags an example line uses: -name, --name, -c (not a "-" inside a word).
var exampleFlag = regexp.MustCompile(`(?:^|\s)(--?[a-zA-Z][a-zA-Z0-9-]*)`)

// builtin commands come from cobra itself (help, completion and its shells).
func builtin(c *cobra.Command) bool {
	for p := c; p != nil; p = p.Parent() {
		if p.Name() == "help" || p.Name() == "completion" {
			return true
		}
	}
	return false
}

// Reporter is the part of *testing.T the checks use.
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// CheckHelp walks every command of root (made with cli.NewRoot) and reports what is missing.
func CheckHelp(t Reporter, root *cobra.Command) {
	t.Helper()
	name := root.Name()
	for _, want := range []string{"version", "completion"} {
		if c, _, err := root.Find([]string{want}); err != nil || c == root {
			t.Errorf("%s has no %s command", name, want)
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden {
			return
		}
		checkCommand(t, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

func checkCommand(t Reporter, c *cobra.Command) {
	t.Helper()
	path := c.CommandPath()
	if strings.Fields(c.Use)[0] != c.Name() {
		t.Errorf("%s: Use %q does not start with the command's name", path, c.Use)
	}
	short := strings.TrimSpace(c.Short)
	switch {
	case short == "":
		t.Errorf("%s: empty Short", path)
	case !builtin(c) && (!unicode.IsUpper([]rune(short)[0]) || strings.HasSuffix(short, ".") || strings.Contains(short, "\n")):
		t.Errorf("%s: Short %q: want one line starting with a capital, no final full stop", path, short)
	}
	for field, text := range map[string]string{"Use": c.Use, "Short": c.Short, "Long": c.Long, "Example": c.Example} {
		if m := placeholder.FindString(text); m != "" {
			t.Errorf("%s: %s has a placeholder %q", path, field, m)
		}
	}
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		u := strings.TrimSpace(f.Usage)
		switch {
		case u == "":
			t.Errorf("%s: flag --%s is not described", path, f.Name)
		case placeholder.MatchString(u):
			t.Errorf("%s: flag --%s: placeholder in %q", path, f.Name, u)
		case builtin(c) || f.Name == "help":
		case !(unicode.IsLower([]rune(u)[0]) || acronym(u) || strings.HasPrefix(u, "Required: ")) || strings.HasSuffix(u, "."):
			// Both programs describe flags as nebula-cert does: lower case (an acronym
			// may lead), "Required: " first for a flag that must be given, no final full stop.
			t.Errorf("%s: flag --%s: %q: want lower case (or \"Required: \") and no final full stop", path, f.Name, u)
		}
	})
	if builtin(c) || !c.Runnable() {
		return
	}
	if strings.TrimSpace(c.Example) == "" {
		t.Errorf("%s: no Example", path)
	}
	for _, line := range strings.Split(c.Example, "\n") {
		if !strings.HasPrefix(line, "  "+c.Root().Name()) {
			t.Errorf("%s: example %q: want two spaces and the program's name first", path, line)
			continue
		}
		for _, m := range exampleFlag.FindAllStringSubmatch(line, -1) {
			flag := strings.TrimLeft(m[1], "-")
			var f *pflag.Flag
			if len(flag) == 1 && !strings.HasPrefix(m[1], "--") {
				f = c.Flags().ShorthandLookup(flag)
			} else {
				f = c.Flags().Lookup(flag)
			}
			if f == nil && flag != "version" {
				t.Errorf("%s: example %q uses %s, which the command does not have", path, line, m[1])
			}
		}
	}
	// The rendered help shows every flag and the examples.
	var out bytes.Buffer
	c.SetOut(&out)
	if err := c.Help(); err != nil {
		t.Errorf("%s --help: %v", path, err)
	}
	help := out.String()
	for _, want := range []string{"Usage:\n", "Examples:\n"} {
		if !strings.Contains(help, want) {
			t.Errorf("%s --help lacks %q:\n%s", path, want, help)
		}
	}
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(help, "--"+f.Name) {
			t.Errorf("%s --help does not show --%s:\n%s", path, f.Name, help)
		}
	})
}

// acronym reports whether s starts with a word of two or more capitals (IPv4, CIDR, TCP).
func acronym(s string) bool {
	w, _, _ := strings.Cut(s, " ")
	n := 0
	for _, r := range w {
		if unicode.IsUpper(r) {
			n++
		}
	}
	return n >= 2
}
