package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/overlay"
)

// docKeyRE matches a key and the first word of its status in a CONFIG.md table row.
var docKeyRE = regexp.MustCompile("^\\| `([a-z0-9_.\\[\\]]+)` \\| ([a-z]*)")

// documentedStatuses reads docs/CONFIG.md's tables: key -> status (the status column's first
// word: implemented, ignored, refused, pending or meshnode).
func documentedStatuses(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if m := docKeyRE.FindStringSubmatch(l); m != nil {
			if _, dup := out[m[1]]; dup {
				t.Errorf("docs/CONFIG.md lists %s twice", m[1])
			}
			out[m[1]] = m[2]
		}
	}
	return out
}

// TestConfigDocListsEveryKeyAndNoOther keeps docs/CONFIG.md, overlay.Config (with
// firewall.Config inside it) and the Nebula key table (overlay/keys.go) in step: a key
// accepted without a row in the doc, a row for a key nothing accepts, or a status in the doc
// other than the table's (meshnode's own keys: "meshnode") fails here.
func TestConfigDocListsEveryKeyAndNoOther(t *testing.T) {
	want := map[string]string{}
	for _, k := range overlay.AcceptedKeys() {
		want[k] = string(overlay.KeyOurs)
	}
	if len(want) < 50 {
		t.Fatalf("only %d keys accepted: the walk is broken", len(want))
	}
	for _, k := range overlay.NebulaKeys() {
		want[k.Path] = string(k.Status)
	}
	doc := documentedStatuses(t, filepath.Join("..", "..", "docs", "CONFIG.md"))
	for k, st := range doc {
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("docs/CONFIG.md lists %s, which meshnode does not accept and the Nebula key table lacks: remove the row or fix its name", k)
		case st != w:
			t.Errorf("docs/CONFIG.md gives %s the status %q; want %q", k, st, w)
		}
	}
	for k, w := range want {
		if _, ok := doc[k]; !ok {
			t.Errorf("config key %s is missing from docs/CONFIG.md: add a row `| `%s` | %s | default | meaning |`", k, k, w)
		}
	}
}

// TestExamplesParse loads the example configs as the daemon would, so they cannot rot.
func TestExamplesParse(t *testing.T) {
	for _, name := range []string{"node.yml", "lighthouse.yml"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := overlay.ParseConfig(b, name)
			if err != nil {
				t.Fatalf("examples/%s: %v", name, err)
			}
			for _, w := range cfg.Warnings {
				t.Errorf("examples/%s: warning: %s", name, w)
			}
			if name == "lighthouse.yml" && !cfg.Lighthouse.AmLighthouse {
				t.Error("lighthouse.yml does not set lighthouse.am_lighthouse")
			}
			if name == "node.yml" && len(cfg.Lighthouse.Hosts) == 0 {
				t.Error("node.yml names no lighthouse")
			}
		})
	}
}

// TestExampleCAConfigLoads loads examples/ca.yml as mesh-cert serve would.
func TestExampleCAConfigLoads(t *testing.T) {
	cfg, err := authority.LoadConfig(filepath.Join("..", "..", "examples", "ca.yml"))
	if err != nil {
		t.Fatalf("examples/ca.yml: %v", err)
	}
	if len(cfg.LighthouseList()) != 2 {
		t.Errorf("examples/ca.yml hands out %d lighthouses, want the 2 of examples/node.yml", len(cfg.LighthouseList()))
	}
}

// TestSystemdUnitsRunTheDocumentedCommands keeps the units in step with the CLI.
func TestSystemdUnitsRunTheDocumentedCommands(t *testing.T) {
	for name, want := range map[string]string{
		"meshnode@.service":       "ExecStart=/usr/local/bin/meshnode -config /etc/meshnode/%i.yml\n",
		"mesh-cert-serve.service": "ExecStart=/usr/local/bin/mesh-cert serve -config /etc/mesh-cert/ca.yml\n",
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q", name, want)
		}
	}
}
