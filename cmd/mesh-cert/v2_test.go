package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/cert"
)

// ca defaults to v1 (see defaultCAVersion) and sign follows the CA's version unless told.
func TestVersionDefaultsFollowTheCA(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "one", "-out-crt", p("1.crt"), "-out-key", p("1.key")))
	mustOK(t, meshCert(t, fixedNow, "ca", "-version", "2", "-name", "two", "-out-crt", p("2.crt"), "-out-key", p("2.key")))
	for _, c := range []struct {
		ca, version string
		want        cert.Version
	}{{"1", "", cert.Version1}, {"2", "", cert.Version2}, {"1", "2", cert.Version2}, {"2", "1", cert.Version1}} {
		out := p("h" + c.ca + c.version + ".crt")
		args := []string{"sign", "-name", "h", "-networks", "10.0.0.1/8", "-ca-crt", p(c.ca + ".crt"), "-ca-key", p(c.ca + ".key"),
			"-out-crt", out, "-out-key", out + ".key"}
		if c.version != "" {
			args = append(args, "-version", c.version)
		}
		mustOK(t, meshCert(t, fixedNow, args...))
		if got := readCert(t, out).Version(); got != c.want {
			t.Errorf("CA v%s, -version %q: got %v, want %v", c.ca, c.version, got, c.want)
		}
	}
	if v := readCert(t, p("1.crt")).Version(); v != cert.Version1 {
		t.Errorf("ca default made %v", v)
	}
}

func TestV2FlagMistakesAreClear(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-version", "2", "-name", "two", "-networks", "10.0.0.0/8",
		"-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	sign := func(extra ...string) []string {
		return append([]string{"sign", "-name", "h", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
			"-out-crt", p("x.crt"), "-out-key", p("x.key")}, extra...)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"version 3", []string{"ca", "-name", "x", "-version", "3"}, 2, "-version must be either 1 or 2"},
		{"P-256", []string{"ca", "-name", "x", "-curve", "P256"}, 2, "P-256"},
		{"IPv6 in a v1 CA", []string{"ca", "-name", "x", "-networks", "fd00::/8"}, 2, "v1 certificates can only contain IPv4"},
		{"zero address", []string{"ca", "-version", "2", "-name", "x", "-networks", "0.0.0.0/0"}, 1, "zero address"},
		{"no networks", sign(), 2, "-networks is required"},
		{"IPv6 in a v1 host", sign("-version", "1", "-networks", "fd00::1/64"), 2, "IPv4"},
		{"duplicate", sign("-networks", "10.0.0.1/8,10.0.0.1/8"), 1, "duplicate network"},
		{"v6 unsafe without v6", sign("-networks", "10.0.0.1/8", "-unsafe-networks", "fd00::/64"), 1, "IPv6 unsafe networks require"},
		{"outside the CA", sign("-networks", "fd00::1/64"), 1, "network assignment outside"},
	} {
		r := meshCert(t, fixedNow, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d %q, want %d and %q", c.name, r.code, r.stderr, c.code, c.want)
		}
	}
}
