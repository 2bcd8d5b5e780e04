package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/internal/testenv"
)

// These tests hold mesh-cert's v2 certificates to the real nebula-cert 1.11.1 (built into
// the tools directory by scripts/install-deps.sh): each tool verifies and prints the
// other's v2 CA and host certificates with the same fingerprints, and for the same inputs
// mesh-cert writes the same bytes.

func newNebulaCertV2(t *testing.T) *nebulaCert {
	t.Helper()
	return &nebulaCert{t: t, bin: testenv.RequireNebulaV2(t, "nebula-cert")}
}

// nebulaPrintJSON returns the objects of `nebula-cert 1.11.1 print -json` (one array), each
// re-encoded compactly as mesh-cert prints one per line.
func nebulaPrintJSON(t *testing.T, nc *nebulaCert, path string) []string {
	t.Helper()
	var objs []json.RawMessage
	if err := json.Unmarshal([]byte(nc.mustRun("print", "-json", "-path", path)), &objs); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = string(o)
	}
	return out
}

func fingerprintOf(t *testing.T, obj string) string {
	t.Helper()
	var v struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(obj), &v); err != nil || v.Fingerprint == "" {
		t.Fatalf("no fingerprint in %s: %v", obj, err)
	}
	return v.Fingerprint
}

// checkBothAgree: both tools verify crt against ca, print it the same (v2: byte for byte;
// -json object for object) and give it the same fingerprint as our library.
func checkBothAgree(t *testing.T, nc *nebulaCert, ca, crt string) {
	t.Helper()
	name := filepath.Base(crt)
	c := readCert(t, crt)
	if c.Details.IsCA {
		// Both refuse a CA as a -crt ("no issuer"); loading it into the pool is the check.
		if _, errLine, ok := nc.run("verify", "-ca", crt, "-crt", crt); ok { // its message is the whole cert, multi-line
			t.Errorf("%s: nebula-cert 1.11.1 verify of a CA: %q", name, errLine)
		}
		if r := meshCert(t, time.Now(), "verify", "-ca", crt, "-crt", crt); r.code != 1 || !strings.Contains(r.stderr, "no issuer") {
			t.Errorf("%s: mesh-cert verify of a CA: %q", name, r.stderr)
		}
	} else {
		if _, errLine, ok := nc.run("verify", "-ca", ca, "-crt", crt); !ok {
			t.Errorf("%s: nebula-cert 1.11.1 verify: %s", name, errLine)
		}
		if r := meshCert(t, time.Now(), "verify", "-ca", ca, "-crt", crt); r.code != 0 {
			t.Errorf("%s: mesh-cert verify: %s", name, r.stderr)
		}
	}
	want := nebulaPrintJSON(t, nc, crt)
	got := strings.Split(strings.TrimSuffix(mustOK(t, meshCert(t, time.Now(), "print", "-json", "-path", crt)).stdout, "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("%s: %d objects printed, nebula-cert printed %d", name, len(got), len(want))
	}
	if fp := fingerprintOf(t, want[0]); fp != c.Fingerprint() {
		t.Errorf("%s: fingerprint %s, nebula-cert 1.11.1 says %s", name, c.Fingerprint(), fp)
	}
	if c.Version() != cert.Version2 {
		return // mesh-cert prints v1 as nebula-cert 1.6.1 does (interop_test.go)
	}
	if got[0] != want[0] {
		t.Errorf("%s: print -json differs\nmesh-cert   %s\nnebula-cert %s", name, got[0], want[0])
	}
	if g, w := mustOK(t, meshCert(t, time.Now(), "print", "-path", crt)).stdout, nc.mustRun("print", "-path", crt); g != w {
		t.Errorf("%s: print differs\nmesh-cert\n%s\nnebula-cert\n%s", name, g, w)
	}
}

func TestInteropV2NebulaCertFilesPassMeshCert(t *testing.T) {
	nc := newNebulaCertV2(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	// Default version of nebula-cert 1.11.1's ca is 2.
	nc.mustRun("ca", "-name", "Neb CA v2", "-groups", "a,b", "-networks", "10.50.0.0/16,fd50::/48",
		"-unsafe-networks", "172.16.0.0/12,fdc0::/16", "-out-crt", p("ca.crt"), "-out-key", p("ca.key"))
	mustOK(t, meshCert(t, time.Now(), "keygen", "-out-key", p("mk.key"), "-out-pub", p("mk.pub")))
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "dual",
		"-networks", "fd50::1/64,10.50.1.1/16", "-unsafe-networks", "172.16.1.0/24,fdc0:1::/64", "-groups", "b,a",
		"-out-crt", p("dual.crt"), "-out-key", p("dual.key"))
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "v6", "-networks", "fd50::2/64",
		"-in-pub", p("mk.pub"), "-out-crt", p("v6.crt"))
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-version", "1", "-name", "old",
		"-ip", "10.50.1.3/16", "-subnets", "172.16.3.0/24", "-out-crt", p("old.crt"), "-out-key", p("old.key"))
	if v := readCert(t, p("ca.crt")).Version(); v != cert.Version2 {
		t.Fatalf("nebula-cert 1.11.1 ca made %v by default", v)
	}
	// mesh-cert signs with nebula-cert's v2 CA key (v2 by default, as the CA), and nebula-cert
	// accepts the result.
	mustOK(t, meshCert(t, time.Now(), "sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "bymesh",
		"-networks", "10.50.1.4/16,fd50::4/64", "-groups", "a", "-out-crt", p("bymesh.crt"), "-out-key", p("bymesh.key")))
	if v := readCert(t, p("bymesh.crt")).Version(); v != cert.Version2 {
		t.Errorf("mesh-cert sign with a v2 CA made %v", v)
	}
	for _, f := range []string{"ca", "dual", "v6", "old", "bymesh"} {
		checkBothAgree(t, nc, p("ca.crt"), p(f+".crt"))
	}
	// Keys written by nebula-cert belong to the certificates as mesh-cert reads them.
	keyPEM, _ := os.ReadFile(p("dual.key"))
	key, _, err := cert.UnmarshalX25519PrivateKey(keyPEM)
	if err != nil || readCert(t, p("dual.crt")).VerifyPrivateKey(key) != nil {
		t.Errorf("dual.key does not belong to dual.crt: %v", err)
	}
}

func TestInteropV2MeshCertFilesPassNebulaCert(t *testing.T) {
	nc := newNebulaCertV2(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, time.Now(), "ca", "-version", "2", "-name", "Mesh CA v2", "-groups", "web,ssh",
		"-networks", "10.42.0.0/16,fd42::/48", "-unsafe-networks", "192.168.0.0/16,fdc1::/32",
		"-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	nc.mustRun("keygen", "-out-key", p("neb.key"), "-out-pub", p("neb.pub"))
	hosts := map[string][]string{
		"dual":   {"-networks", "fd42::1/64,10.42.0.1/16", "-unsafe-networks", "fdc1::/64,192.168.1.0/24", "-groups", "web"},
		"v6only": {"-networks", "fd42::2/64", "-unsafe-networks", "fdc1:0:1::/64"},
		"inpub":  {"-networks", "10.42.0.3/16", "-in-pub", p("neb.pub")},
		"oldflg": {"-ip", "10.42.0.4/16", "-subnets", "192.168.4.0/24"},
		"v1":     {"-version", "1", "-networks", "10.42.0.5/16", "-groups", "ssh"},
	}
	for name, args := range hosts {
		args = append([]string{"sign", "-name", name, "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
			"-out-crt", p(name + ".crt")}, args...)
		if name != "inpub" {
			args = append(args, "-out-key", p(name+".key"))
		}
		mustOK(t, meshCert(t, time.Now(), args...))
	}
	for _, f := range []string{"ca", "dual", "v6only", "inpub", "oldflg", "v1"} {
		checkBothAgree(t, nc, p("ca.crt"), p(f+".crt"))
	}
	// The CA key mesh-cert wrote signs with nebula-cert 1.11.1 too.
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "byneb", "-networks", "fd42::9/64",
		"-out-crt", p("byneb.crt"), "-out-key", p("byneb.key"))
	checkBothAgree(t, nc, p("ca.crt"), p("byneb.crt"))
}

// For the same CA, key, inputs and second, mesh-cert sign writes nebula-cert 1.11.1's bytes.
func TestInteropV2SignIsByteIdentical(t *testing.T) {
	nc := newNebulaCertV2(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	nc.mustRun("ca", "-name", "Same CA", "-networks", "10.60.0.0/16,fd60::/48", "-groups", "x,y,z",
		"-out-crt", p("ca2.crt"), "-out-key", p("ca2.key"))
	nc.mustRun("ca", "-version", "1", "-name", "Same CA v1", "-networks", "10.60.0.0/16",
		"-out-crt", p("ca1.crt"), "-out-key", p("ca1.key"))
	nc.mustRun("keygen", "-out-key", p("h.key"), "-out-pub", p("h.pub"))
	cases := map[string][]string{
		"dual unsorted": {"-networks", "fd60::7/64,10.60.0.7/16", "-groups", "z,x", "-unsafe-networks", "10.1.0.0/16,fd01::/64,10.0.0.0/16"},
		"v6 only":       {"-networks", "fd60::8/64"},
		"deprecated":    {"-ip", "10.60.0.9/16", "-subnets", "10.2.0.0/16"},
		"duration":      {"-networks", "10.60.0.10/24", "-duration", "36h"},
		"v1 by v2 CA":   {"-version", "1", "-networks", "10.60.0.11/16", "-groups", "y"},
		"v2 by v1 CA":   {"-ca-crt", p("ca1.crt"), "-ca-key", p("ca1.key"), "-networks", "10.60.0.12/16"},
		"v1 by v1 CA":   {"-ca-crt", p("ca1.crt"), "-ca-key", p("ca1.key"), "-networks", "10.60.0.13/16"},
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			base := []string{"sign", "-name", "same-host", "-in-pub", p("h.pub"), "-ca-crt", p("ca2.crt"), "-ca-key", p("ca2.key")}
			args := append(append([]string{}, base...), extra...)
			neb := p(strings.ReplaceAll(name, " ", "_") + ".neb.crt")
			mine := p(strings.ReplaceAll(name, " ", "_") + ".mesh.crt")
			nc.mustRun(append(args, "-out-crt", neb)...)
			want, err := os.ReadFile(neb)
			if err != nil {
				t.Fatal(err)
			}
			// mesh-cert runs at the second nebula-cert stamped into its certificate.
			at := readCert(t, neb).Details.NotBefore
			mustOK(t, meshCert(t, at, append(args, "-out-crt", mine)...))
			got, _ := os.ReadFile(mine)
			if !bytes.Equal(got, want) {
				t.Errorf("mesh-cert wrote\n%s\nnebula-cert 1.11.1 wrote\n%s", got, want)
			}
		})
	}
}

// A pki.ca bundle with a v1 and a v2 CA, each made by either tool, verifies hosts of both
// versions from both CAs in both tools.
func TestInteropV2MixedBundle(t *testing.T) {
	nc := newNebulaCertV2(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, time.Now(), "ca", "-version", "1", "-name", "mesh v1", "-out-crt", p("a.crt"), "-out-key", p("a.key")))
	nc.mustRun("ca", "-name", "neb v2", "-out-crt", p("b.crt"), "-out-key", p("b.key"))
	a, _ := os.ReadFile(p("a.crt"))
	b, _ := os.ReadFile(p("b.crt"))
	if err := os.WriteFile(p("bundle.crt"), append(a, b...), 0o644); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ca := range []string{"a", "b"} {
		for _, v := range []string{"1", "2"} {
			n++
			h := p(ca + v + ".crt")
			mustOK(t, meshCert(t, time.Now(), "sign", "-version", v, "-name", "h", "-networks", "10.9.0."+string(rune('0'+n))+"/24",
				"-ca-crt", p(ca+".crt"), "-ca-key", p(ca+".key"), "-out-crt", h, "-out-key", p(ca+v+".key")))
			checkBothAgree(t, nc, p("bundle.crt"), h)
		}
	}
}
