package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The import directions of DESIGN.md:
//
//	cmd -> overlay -> {handshake, lighthouse, firewall, overlay/tun, overlay/udp} -> cert
//	cert/authority -> cert;  cmd/mesh-cert -> cert/authority/pgstore -> cert/authority;
//	cmd/meshnode -> nodekeys -> {overlay, cert/authority/client -> cert/authority/api};
//	cert/authority -> cert/authority/api;  cmd/mesh-cert -> cert/authority/console -> cert/authority;
//	cmd/mesh-fleet -> fleet -> {handshake, lighthouse, overlay/header} (a load generator, no node);
//	nothing imports cmd or e2e.
//
// Each rule names a package (and the packages under it) and the module packages it must not
// import. Test files may import test helpers freely, so only non-test imports are checked,
// except that nothing, tests included, may import cmd.
var importRules = []struct {
	pkg       string   // relative to the module root; "cert" also covers cert/certtest
	forbidden []string // packages relative to the module root, with those below; "=p" is p alone
	why       string
}{
	{"cert", []string{"overlay", "handshake", "lighthouse", "firewall", "cert/authority", "cmd", "e2e"},
		"cert is the bottom layer: a codec and a CA pool, no I/O beyond files"},
	{"cert/authority", []string{"overlay", "handshake", "lighthouse", "firewall", "cmd", "e2e", "cert/authority/pgstore", "cert/authority/console", "nodekeys"},
		"the CA service depends on cert only; which store driver runs, and whether a console does, is cmd's choice"},
	{"cert/authority/console", []string{"cert/authority/client", "nodekeys"},
		"the web console calls the Authority in the service's process; it is no node and no API client"},
	{"cert/authority/api", []string{"=cert/authority", "cert/authority/client", "cert/authority/pgstore", "cert/authority/storetest",
		"overlay", "handshake", "lighthouse", "firewall", "cmd", "e2e", "nodekeys"},
		"the API's wire types are what service and node share: they import neither"},
	{"cert/authority/client", []string{"=cert/authority", "cert/authority/pgstore", "cert/authority/storetest",
		"overlay", "handshake", "lighthouse", "firewall", "cmd", "e2e", "nodekeys"},
		"the node's client speaks the API (cert/authority/api) and links no service or store"},
	{"nodekeys", []string{"=cert/authority", "cert/authority/pgstore", "cert/authority/storetest", "cmd", "e2e"},
		"the node's key handling talks to the CA service through its client, never links the service"},
	{"nodekeys/nodekeystest", []string{"cmd", "e2e"},
		"a test fixture: it runs a real CA service for the node's tests"},
	{"cmd/meshnode", []string{"=cert/authority", "cert/authority/pgstore", "cert/authority/storetest"},
		"the daemon links no CA service: its key handling is nodekeys"},
	{"cert/authority/pgstore", []string{"overlay", "handshake", "lighthouse", "firewall", "cmd", "e2e", "cert/authority/client"},
		"the PostgreSQL store is an authority.Store beside bbolt: records, not the service's clients"},
	{"handshake", []string{"overlay", "lighthouse", "firewall", "cert/authority", "cmd", "e2e", "fleet"},
		"handshake is a pure state machine under overlay"},
	{"lighthouse", []string{"overlay", "handshake", "firewall", "cert/authority", "cmd", "e2e", "fleet"},
		"lighthouse talks to the runtime through a small interface, not by importing it"},
	{"firewall", []string{"overlay", "handshake", "lighthouse", "cert/authority", "cmd", "e2e"},
		"the firewall is pure: (packet, peer identity, direction) -> verdict"},
	{"overlay/tun", []string{"=overlay", "overlay/udp", "handshake", "lighthouse", "firewall", "cmd", "e2e"},
		"a TUN device knows nothing of the overlay"},
	{"overlay/udp", []string{"=overlay", "overlay/tun", "handshake", "lighthouse", "firewall", "cmd", "e2e"},
		"a UDP conn knows nothing of the overlay"},
	{"overlay", []string{"cmd", "e2e", "cert/authority", "nodekeys", "fleet"},
		"the runtime is imported by cmd, never the other way round"},
	{"fleet", []string{"=overlay", "overlay/tun", "overlay/udp", "firewall", "cert/authority", "nodekeys", "cmd", "e2e"},
		"the load generator speaks the wire protocol (handshake, lighthouse, overlay/header); it is no node and links no runtime"},
	{"internal", []string{"cmd", "e2e", "overlay", "handshake", "lighthouse", "firewall", "cert"},
		"internal helpers sit below everything"},
	{"internal/version", []string{"cmd", "e2e", "overlay", "handshake", "lighthouse", "firewall", "cert", "internal/cli", "internal/testenv"},
		"the build's identity depends on nothing of ours"},
	{"internal/cli", []string{"cmd", "e2e", "overlay", "handshake", "lighthouse", "firewall", "cert", "internal/testenv"},
		"the shared command-line plumbing knows no program: both cmd packages use it"},
}

// goPackage is the part of `go list -json` this test reads.
type goPackage struct {
	ImportPath   string
	Dir          string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) (module string, pkgs []goPackage) {
	t.Helper()
	root := moduleRoot(t)
	out, err := exec.Command(goTool(), "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	module = strings.TrimSpace(string(out))
	cmd := exec.Command(goTool(), "list", "-e", "-json", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return module, pkgs
}

// under reports whether rel is pkg or a package below it.
func under(rel, pkg string) bool { return rel == pkg || strings.HasPrefix(rel, pkg+"/") }

// importViolations returns why importing irel from rel breaks the design (nothing if it does not);
// both are relative to the module root.
func importViolations(rel, irel string) []string {
	var out []string
	// The most specific rule decides (overlay/udp before overlay).
	best := -1
	for i, r := range importRules {
		if under(rel, r.pkg) && (best < 0 || len(r.pkg) > len(importRules[best].pkg)) {
			best = i
		}
	}
	if best >= 0 {
		r := importRules[best]
		for _, f := range r.forbidden {
			if exact, ok := strings.CutPrefix(f, "="); ok && irel == exact || !ok && under(irel, f) {
				out = append(out, fmt.Sprintf("%s imports %s: %s", rel, irel, r.why))
			}
		}
	}
	if under(irel, "e2e") && !under(rel, "e2e") {
		out = append(out, fmt.Sprintf("%s imports %s: nothing outside e2e imports e2e", rel, irel))
	}
	if under(irel, "cmd") {
		out = append(out, fmt.Sprintf("%s imports %s: nothing imports cmd", rel, irel))
	}
	return out
}

func TestImportRulesCatchUpwardImports(t *testing.T) {
	for _, c := range []struct {
		rel, irel string
		bad       bool
	}{
		{"overlay", "handshake", false},
		{"overlay", "overlay/udp", false},
		{"cmd/meshnode", "overlay", false},
		{"handshake", "cert", false},
		{"cert/certtest", "cert", false},
		{"cert/authority", "cert", false},
		{"cert/authority", "cert/authority/pgstore", true},
		{"cert/authority/pgstore", "cert/authority", false},
		{"cmd/mesh-cert", "cert/authority/pgstore", false},
		{"overlay/udp/udptest", "overlay/udp", false},
		{"e2e", "e2e/netns", false},
		{"handshake", "overlay", true},
		{"handshake", "firewall", true},
		{"cert", "cert/authority", true},
		{"cert", "handshake", true},
		{"overlay/udp", "overlay", true},
		{"overlay/udp", "overlay/tun", true},
		{"overlay", "cmd/meshnode", true},
		{"firewall", "e2e/netns", true},
		{"cert/authority", "overlay", true},
		{"cmd/meshnode", "internal/cli", false},
		{"internal/cli", "internal/version", false},
		{"internal/version", "internal/cli", true},
		{"internal/cli/clitest", "overlay", true},
		{"cmd/meshnode", "nodekeys", false},
		{"cmd/meshnode", "cert/authority", true},
		{"cmd/meshnode", "cert/authority/api", false},
		{"nodekeys", "overlay", false},
		{"nodekeys", "cert/authority/client", false},
		{"nodekeys", "cert/authority", true},
		{"nodekeys/nodekeystest", "cert/authority", false},
		{"overlay", "nodekeys", true},
		{"cert/authority", "cert/authority/api", false},
		{"cert/authority/client", "cert/authority/api", false},
		{"cert/authority/client", "cert/authority", true},
		{"cert/authority/api", "cert/authority", true},
		{"cert/authority/api", "cert", false},
		{"fleet", "handshake", false},
		{"fleet", "overlay/header", false},
		{"fleet", "overlay", true},
		{"overlay", "fleet", true},
		{"cmd/mesh-fleet", "fleet", false},
	} {
		if got := importViolations(c.rel, c.irel); (len(got) > 0) != c.bad {
			t.Errorf("%s importing %s: violations %q, want bad=%v", c.rel, c.irel, got, c.bad)
		}
	}
}

func TestPackagesImportOnlyDownwardsAsDesigned(t *testing.T) {
	module, pkgs := listPackages(t)
	relOf := func(path string) (string, bool) {
		if path == module {
			return "", true
		}
		return strings.CutPrefix(path, module+"/")
	}
	for _, p := range pkgs {
		rel, _ := relOf(p.ImportPath)
		for _, imp := range p.Imports {
			if irel, ok := relOf(imp); ok {
				for _, v := range importViolations(rel, irel) {
					t.Error(v)
				}
			}
		}
		for _, imp := range append(append([]string{}, p.TestImports...), p.XTestImports...) {
			if irel, ok := relOf(imp); ok && under(irel, "cmd") {
				t.Errorf("tests of %s import %s: nothing imports cmd", rel, irel)
			}
		}
	}
}

// TestMeshnodeLinksNoCAServiceOrStore: the node's binary carries the API's wire types and
// the client, not the CA service's server code or a store driver (bbolt, pgx), nor Prometheus's
// client and the protobuf runtime it brings (internal/prom serves the metrics).
func TestMeshnodeLinksNoCAServiceOrStore(t *testing.T) {
	module, _ := listPackages(t)
	cmd := exec.Command(goTool(), "list", "-deps", "./cmd/meshnode")
	cmd.Dir = moduleRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/meshnode: %v\n%s", err, stderr.String())
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, module+"/nodekeys") || !slices.Contains(deps, module+"/cert/authority/client") {
		t.Fatalf("go list -deps ./cmd/meshnode lacks nodekeys or the client: %q", deps)
	}
	for _, d := range deps {
		rel, ours := strings.CutPrefix(d, module+"/")
		switch {
		case under(d, "go.etcd.io/bbolt"), under(d, "github.com/jackc/pgx/v5"):
			t.Errorf("meshnode links %s: a CA service store", d)
		case under(d, "github.com/prometheus"), under(d, "google.golang.org/protobuf/reflect"), under(d, "google.golang.org/protobuf/proto"):
			// Issue 18: client_golang and the protobuf runtime it needs were some 2 MiB of
			// every daemon's RSS; internal/prom serves the same text format.
			t.Errorf("meshnode links %s: use internal/prom", d)
		case ours && under(rel, "cert/authority") && !under(rel, "cert/authority/api") && !under(rel, "cert/authority/client"):
			t.Errorf("meshnode links %s: the CA service's own code", d)
		}
	}
}

// TestNoGlobalMetricsRegistryOrForeignLogger checks two habits of DESIGN.md and STYLE.md in
// non-test code: metrics go to a prometheus.Registerer the caller passes in (never the global
// registry), and logging goes through log/slog (no logrus).
func TestNoGlobalMetricsRegistryOrForeignLogger(t *testing.T) {
	_, pkgs := listPackages(t)
	banned := []struct{ text, why string }{
		{"prometheus.MustRegister(", "use the injected prometheus.Registerer"},
		{"prometheus.Register(", "use the injected prometheus.Registerer"},
		{"prometheus.DefaultRegisterer", "use the injected prometheus.Registerer"},
		{"prometheus.DefaultGatherer", "serve the node's own registry"},
		{"promhttp.Handler()", "promhttp.HandlerFor the node's own registry"},
		{`"github.com/sirupsen/logrus"`, "log with log/slog"},
	}
	for _, p := range pkgs {
		for _, f := range p.GoFiles {
			src, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range banned {
				if bytes.Contains(src, []byte(b.text)) {
					t.Errorf("%s/%s uses %s: %s", p.ImportPath, f, b.text, b.why)
				}
			}
		}
	}
}
