package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/internal/version"
)

var fixedNow = time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)

type result struct {
	stdout, stderr string
	code           int
}

// meshCert runs one command line in-process with the given clock.
func meshCert(t *testing.T, now time.Time, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &env{stdout: &out, stderr: &errb, now: func() time.Time { return now }})
	return result{out.String(), errb.String(), code}
}

func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	return r
}

func readCert(t *testing.T, path string) *cert.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := cert.UnmarshalPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestNormalizeArgsAcceptsSingleDashLongFlags(t *testing.T) {
	root := newRoot(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, now: time.Now})
	cases := []struct {
		in, want []string
	}{
		{[]string{"sign", "-name", "web1", "-ip", "10.0.0.1/8"}, []string{"sign", "--name", "web1", "--ip", "10.0.0.1/8"}},
		{[]string{"sign", "-name=web1", "--ip=10.0.0.1/8"}, []string{"sign", "--name=web1", "--ip=10.0.0.1/8"}},
		{[]string{"sign", "-name", "-weird", "-groups", "a"}, []string{"sign", "--name", "-weird", "--groups", "a"}},
		{[]string{"print", "-json", "-path", "x.crt"}, []string{"print", "--json", "--path", "x.crt"}},
		{[]string{"print", "-json", "x.crt"}, []string{"print", "--json", "x.crt"}},
		{[]string{"print", "-h"}, []string{"print", "-h"}},
		{[]string{"ca", "-help"}, []string{"ca", "--help"}},
		{[]string{"print", "--", "-path"}, []string{"print", "--", "-path"}},
		{[]string{"-version"}, []string{"version"}},
		{[]string{"sign", "-bogus"}, []string{"sign", "--bogus"}},
	}
	for _, c := range cases {
		if got := normalizeArgs(root, c.in); !slices.Equal(got, c.want) {
			t.Errorf("normalizeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCAAndSignMatchNebulaCertDefaults(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "Acme", "-groups", "web, ssh,", "-ips", "10.42.0.0/16",
		"-subnets", "192.168.0.0/16", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	mustOK(t, meshCert(t, fixedNow.Add(time.Minute), "sign", "--name", "web1", "-ip", "10.42.1.5/16,10.42.9.9/24",
		"-groups", "web", "-subnets", "192.168.5.0/24", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
		"-out-crt", p("web1.crt"), "-out-key", p("web1.key")))

	ca := readCert(t, p("ca.crt"))
	host := readCert(t, p("web1.crt"))
	if !ca.Details.IsCA || ca.Details.Name != "Acme" || !slices.Equal(ca.Details.Groups, []string{"web", "ssh"}) ||
		!ca.Details.NotBefore.Equal(fixedNow.Truncate(time.Second)) ||
		!ca.Details.NotAfter.Equal(fixedNow.Truncate(time.Second).Add(8760*time.Hour)) {
		t.Errorf("CA details %+v", ca.Details)
	}
	if !ca.CheckSignature(ca.Details.PublicKey) {
		t.Error("CA is not self-signed")
	}
	if got := host.Details.NotAfter; !got.Equal(ca.Details.NotAfter.Add(-time.Second)) {
		t.Errorf("host NotAfter %v, want one second before the CA's %v", got, ca.Details.NotAfter)
	}
	if got := host.Details.NotBefore; !got.Equal(fixedNow.Add(time.Minute).Truncate(time.Second)) {
		t.Errorf("host NotBefore %v", got)
	}
	if host.Details.Issuer != ca.Fingerprint() || len(host.Details.Ips) != 2 || host.Details.Ips[0].String() != "10.42.1.5/16" {
		t.Errorf("host details %+v", host.Details)
	}
	pool := cert.NewPool()
	if err := pool.AddCA(ca); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(host, fixedNow.Add(time.Hour)); err != nil {
		t.Errorf("signed host does not verify: %v", err)
	}
	for name, perm := range map[string]fs.FileMode{"ca.key": 0o600, "web1.key": 0o600, "ca.crt": 0o644, "web1.crt": 0o644} {
		st, err := os.Stat(p(name))
		if err != nil || st.Mode().Perm() != perm {
			t.Errorf("%s: mode %v (%v), want %v", name, st.Mode().Perm(), err, perm)
		}
	}
	keyPEM, _ := os.ReadFile(p("web1.key"))
	key, _, err := cert.UnmarshalX25519PrivateKey(keyPEM)
	if err != nil || host.VerifyPrivateKey(key) != nil {
		t.Errorf("web1.key does not belong to web1.crt: %v", err)
	}
	r := mustOK(t, meshCert(t, fixedNow.Add(time.Hour), "verify", "-ca", p("ca.crt"), "-crt", p("web1.crt")))
	if r.stdout != "" || r.stderr != "" {
		t.Errorf("verify printed %q %q on success", r.stdout, r.stderr)
	}
	// -duration overrides the default end.
	mustOK(t, meshCert(t, fixedNow, "sign", "-name", "short", "-ip", "10.42.1.6/16", "-duration", "1h",
		"-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-out-crt", p("short.crt"), "-out-key", p("short.key")))
	if got := readCert(t, p("short.crt")).Details.NotAfter; !got.Equal(fixedNow.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("-duration 1h gave NotAfter %v", got)
	}
}

func TestSignDefaultsToFilesNamedAfterTheHost(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "ca"))
	mustOK(t, meshCert(t, fixedNow, "sign", "-name", "db1", "-ip", "10.1.0.1/16"))
	if got := listDir(t, dir); !slices.Equal(got, []string{"ca.crt", "ca.key", "db1.crt", "db1.key"}) {
		t.Errorf("files %q", got)
	}
}

func TestSignWithInPubWritesNoKey(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "ca", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	mustOK(t, meshCert(t, fixedNow, "keygen", "-out-key", p("h.key"), "-out-pub", p("h.pub")))
	mustOK(t, meshCert(t, fixedNow, "sign", "-name", "h", "-ip", "10.1.0.1/16", "-in-pub", p("h.pub"),
		"-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-out-crt", p("h.crt")))
	if got := listDir(t, dir); !slices.Equal(got, []string{"ca.crt", "ca.key", "h.crt", "h.key", "h.pub"}) {
		t.Errorf("files %q", got)
	}
	keyPEM, _ := os.ReadFile(p("h.key"))
	key, _, _ := cert.UnmarshalX25519PrivateKey(keyPEM)
	if err := readCert(t, p("h.crt")).VerifyPrivateKey(key); err != nil {
		t.Errorf("cert does not carry the keygen public key: %v", err)
	}
	if st, _ := os.Stat(p("h.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("keygen key mode %v", st.Mode().Perm())
	}
}

// TestFailuresAreOneLineAndLeaveNoFiles covers the safety promises: a one-line error that
// names the file and the reason, a non-zero exit, nothing written, nothing overwritten.
func TestFailuresAreOneLineAndLeaveNoFiles(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "ca", "-ips", "10.1.0.0/16", "-groups", "web",
		"-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "other", "-out-crt", p("other.crt"), "-out-key", p("other.key")))
	mustOK(t, meshCert(t, fixedNow, "keygen", "-out-key", p("k.key"), "-out-pub", p("k.pub")))
	os.WriteFile(p("taken.crt"), []byte("precious"), 0o644)
	os.WriteFile(p("garbage.crt"), []byte("not pem"), 0o644)
	before := listDir(t, dir)
	sign := func(extra ...string) []string {
		return append([]string{"sign", "-name", "h", "-ip", "10.1.0.1/16", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
			"-out-crt", p("new.crt"), "-out-key", p("new.key")}, extra...)
	}
	cases := []struct {
		name string
		args []string
		code int
		want []string // substrings of the one line
	}{
		{"CA key does not match CA cert", []string{"sign", "-name", "h", "-ip", "10.1.0.1/16", "-ca-crt", p("ca.crt"),
			"-ca-key", p("other.key"), "-out-crt", p("new.crt"), "-out-key", p("new.key")}, 1, []string{p("other.key"), "does not match"}},
		{"cert would overwrite", append(sign()[:len(sign())-4], "-out-crt", p("taken.crt"), "-out-key", p("new.key")), 1,
			[]string{p("taken.crt"), "exists", "--force"}},
		{"key would overwrite", append(sign()[:len(sign())-4], "-out-crt", p("new.crt"), "-out-key", p("k.key")), 1,
			[]string{p("k.key"), "exists"}},
		{"IP outside CA", []string{"sign", "-name", "h", "-ip", "10.2.0.1/16", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
			"-out-crt", p("new.crt"), "-out-key", p("new.key")}, 1, []string{"constraints violated", "10.2.0.1/16"}},
		{"group outside CA", sign("-groups", "db"), 1, []string{"group not present on the signing ca: db"}},
		{"outlives CA", sign("-duration", "20000h"), 1, []string{"certificate expires after signing certificate"}},
		{"missing CA key", append(sign(), "-ca-key", p("nope.key")), 1, []string{p("nope.key"), "no such file"}},
		{"garbage CA cert", append(sign(), "-ca-crt", p("garbage.crt")), 1, []string{p("garbage.crt"), "no PEM block"}},
		{"host cert as CA", append(sign(), "-ca-crt", p("k.pub")), 1, []string{p("k.pub")}},
		{"missing output dir", append(sign(), "-out-crt", p("no/dir/x.crt")), 1, []string{p("no/dir/x.crt")}},
		{"in-pub with out-key", append(sign()[:len(sign())-2], "-in-pub", p("k.pub"), "-out-key", p("x.key")), 2, []string{"-in-pub"}},
		{"no name", []string{"sign", "-ip", "10.1.0.1/16"}, 2, []string{"-name is required"}},
		{"IPv6", sign("-ip", "fd00::1/64"), 2, []string{"IPv4"}},
		{"bad CIDR", sign("-ip", "10.1.0.1"), 2, []string{"10.1.0.1"}},
		{"unknown flag", sign("-colour", "red"), 2, []string{"unknown flag: --colour"}},
		{"CA would overwrite", []string{"ca", "-name", "x", "-out-crt", p("new.crt"), "-out-key", p("ca.key")}, 1, []string{p("ca.key"), "exists"}},
		{"keygen would overwrite pub", []string{"keygen", "-out-key", p("new.key"), "-out-pub", p("k.pub")}, 1, []string{p("k.pub")}},
		{"expired CA", sign(), 1, nil}, // run with a clock after the CA's end below
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := fixedNow
			if c.name == "expired CA" {
				now = fixedNow.Add(9000 * time.Hour)
				c.want = []string{p("ca.crt"), "expired"}
			}
			r := meshCert(t, now, c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.code, c.code, r.stderr)
			}
			first, _, _ := strings.Cut(r.stderr, "\n")
			if !strings.HasPrefix(first, "Error: ") {
				t.Errorf("stderr %q", r.stderr)
			}
			if c.code == 1 && strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("not one line: %q", r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(first, w) {
					t.Errorf("error %q lacks %q", first, w)
				}
			}
			if got := listDir(t, dir); !slices.Equal(got, before) {
				t.Errorf("files changed: %q, want %q", got, before)
			}
			if b, _ := os.ReadFile(p("taken.crt")); string(b) != "precious" {
				t.Error("existing file overwritten")
			}
		})
	}
	// --force does overwrite.
	mustOK(t, meshCert(t, fixedNow, append(sign()[:len(sign())-4], "-out-crt", p("taken.crt"), "-out-key", p("new.key"), "--force")...))
	readCert(t, p("taken.crt"))
}

func TestVerifyReportsNebulaReasons(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "ca", "-duration", "100h", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	mustOK(t, meshCert(t, fixedNow, "ca", "-name", "other", "-out-crt", p("other.crt"), "-out-key", p("other.key")))
	mustOK(t, meshCert(t, fixedNow, "sign", "-name", "h", "-ip", "10.1.0.1/16", "-duration", "10h",
		"-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-out-crt", p("h.crt"), "-out-key", p("h.key")))
	cases := []struct {
		name string
		now  time.Time
		ca   string
		crt  string
		want string
	}{
		{"valid", fixedNow.Add(time.Hour), "ca.crt", "h.crt", ""},
		{"expired host", fixedNow.Add(11 * time.Hour), "ca.crt", "h.crt", "certificate is expired"},
		{"expired root", fixedNow.Add(101 * time.Hour), "ca.crt", "h.crt", "root certificate is expired"},
		{"foreign CA", fixedNow.Add(time.Hour), "other.crt", "h.crt", "could not find ca for the certificate"},
		{"CA has no issuer", fixedNow.Add(time.Hour), "ca.crt", "ca.crt", "no issuer in certificate"},
		{"host as CA", fixedNow.Add(time.Hour), "h.crt", "h.crt", "h: certificate is not a CA"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := meshCert(t, c.now, "verify", "-ca", p(c.ca), "-crt", p(c.crt))
			if c.want == "" {
				mustOK(t, r)
				return
			}
			if r.code != 1 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("exit %d, stderr %q, want %q", r.code, r.stderr, c.want)
			}
		})
	}
}

func TestPrintMatchesNebulaCertGoldenOutput(t *testing.T) {
	files, _ := filepath.Glob("../../cert/testdata/golden/*.crt")
	if len(files) == 0 {
		t.Fatal("no golden certificates")
	}
	for _, f := range files {
		base := strings.TrimSuffix(f, ".crt")
		for flag, ext := range map[string]string{"-json": ".json", "": ".txt"} {
			want, err := os.ReadFile(base + ext)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"print", "-path", f}
			if flag != "" {
				args = append(args, flag)
			}
			r := mustOK(t, meshCert(t, fixedNow, args...))
			if r.stdout != string(want) {
				t.Errorf("%s %s:\n got %s\nwant %s", filepath.Base(f), flag, r.stdout, want)
			}
		}
	}
}

func TestPrintRefusesBadFilesWithoutPartialOutput(t *testing.T) {
	dir := t.TempDir()
	good, _ := os.ReadFile("../../cert/testdata/golden/ca.crt")
	os.WriteFile(filepath.Join(dir, "half.crt"), append(good, "junk"...), 0o644)
	key, _ := os.ReadFile("../../cert/testdata/golden/ca.key")
	os.WriteFile(filepath.Join(dir, "key.crt"), key, 0o644)
	for _, f := range []string{"half.crt", "key.crt", "missing.crt"} {
		r := meshCert(t, fixedNow, "print", filepath.Join(dir, f))
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, f) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", f, r.code, r.stdout, r.stderr)
		}
	}
}

func TestVersionPrintsTheVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		r := meshCert(t, fixedNow, args...)
		if r.code != 0 || r.stdout != version.Line("mesh-cert")+"\n" {
			t.Errorf("%q: exit %d, %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestErrorsKeepTheirSentinels(t *testing.T) {
	err := runVerify(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, now: time.Now}, verifyOptions{ca: "x"})
	if !errors.Is(err, errUsage) {
		t.Errorf("missing -crt: %v", err)
	}
}

func TestUsageMistakesExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"sign", "--duration", "soon"},
		{"sign", "--name"},
		{"frobnicate"},
		{"verify", "extra"},
		{"print", "a", "b"},
	} {
		r := meshCert(t, fixedNow, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--help") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}
