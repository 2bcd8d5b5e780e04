package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/overlay"
)

// configKeys walks a config type by its yaml tags and returns every key path a user can
// write: nested sections joined by ".", list items as "[]" (firewall.inbound[].port).
// yaml.Node fields and maps are free-form and end the walk.
func configKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		out = append(out, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == reflect.TypeOf(yaml.Node{}):
		case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
			out = append(out, configKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && ft.Elem() != reflect.TypeOf(yaml.Node{}):
			out = append(out, configKeys(ft.Elem(), key+"[]")...)
		}
	}
	return out
}

// docKeyRE matches a key in the first column of a CONFIG.md table row.
var docKeyRE = regexp.MustCompile("^\\| `([a-z0-9_.\\[\\]]+)` \\|")

func documentedKeys(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		if m := docKeyRE.FindStringSubmatch(l); m != nil {
			keys = append(keys, m[1])
		}
	}
	return keys
}

// TestConfigDocListsEveryKeyAndNoOther keeps docs/CONFIG.md and overlay.Config (with
// firewall.Config inside it) in step: a key added to the code without a row in the doc, or
// a row for a key the code does not accept, fails here.
func TestConfigDocListsEveryKeyAndNoOther(t *testing.T) {
	code := configKeys(reflect.TypeOf(overlay.Config{}), "")
	doc := documentedKeys(t, filepath.Join("..", "..", "docs", "CONFIG.md"))
	if len(code) < 50 {
		t.Fatalf("only %d keys found in overlay.Config: the walk is broken", len(code))
	}
	seen := map[string]int{}
	for _, k := range doc {
		seen[k]++
		if seen[k] == 2 {
			t.Errorf("docs/CONFIG.md lists %s twice", k)
		}
		if !slices.Contains(code, k) {
			t.Errorf("docs/CONFIG.md lists %s, which overlay.Config does not accept: remove the row or fix its name", k)
		}
	}
	for _, k := range code {
		if seen[k] == 0 {
			t.Errorf("config key %s is missing from docs/CONFIG.md: add a row `| `%s` | default | meaning |`", k, k)
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
