package main

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/internal/testenv"
)

// These tests hold mesh-cert to the real nebula-cert 1.6.1: each tool must accept the
// other's files, print them identically, and refuse the same bad certificates for the same
// reasons.

type nebulaCert struct {
	t   *testing.T
	bin string
}

func newNebulaCert(t *testing.T) *nebulaCert {
	t.Helper()
	return &nebulaCert{t: t, bin: testenv.RequireBinary(t, "nebula-cert")}
}

// run returns stdout, the first line of stderr and whether the exit status was 0.
func (n *nebulaCert) run(args ...string) (string, string, bool) {
	n.t.Helper()
	cmd := exec.Command(n.bin, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC") // nebula-cert prints local times
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		n.t.Fatalf("nebula-cert %q: %v", args, err)
	}
	first, _, _ := strings.Cut(errb.String(), "\n")
	return out.String(), first, err == nil
}

func (n *nebulaCert) mustRun(args ...string) string {
	n.t.Helper()
	out, errLine, ok := n.run(args...)
	if !ok {
		n.t.Fatalf("nebula-cert %q: %s", args, errLine)
	}
	return out
}

func now() time.Time { return time.Now() }

func TestInteropMeshCertFilesPassNebulaCert(t *testing.T) {
	nc := newNebulaCert(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustOK(t, meshCert(t, now(), "ca", "-name", "Mesh CA", "-groups", "web,ssh,db", "-ips", "10.42.0.0/16,10.43.0.0/16",
		"-subnets", "192.168.0.0/16", "-out-crt", p("ca.crt"), "-out-key", p("ca.key")))
	nc.mustRun("keygen", "-out-key", p("neb.key"), "-out-pub", p("neb.pub"))
	hosts := map[string][]string{
		"plain":   {"-ip", "10.42.0.1/16"},
		"multiip": {"-ip", "10.42.0.2/16,10.43.7.7/24", "-groups", "web,ssh"},
		"subnets": {"-ip", "10.42.0.3/16", "-subnets", "192.168.10.0/24,192.168.11.0/24", "-groups", "db"},
		"inpub":   {"-ip", "10.42.0.4/16", "-in-pub", p("neb.pub")},
	}
	for name, args := range hosts {
		args = append([]string{"sign", "-name", name, "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"),
			"-out-crt", p(name + ".crt")}, args...)
		if name != "inpub" {
			args = append(args, "-out-key", p(name+".key"))
		}
		mustOK(t, meshCert(t, now(), args...))
		if _, errLine, ok := nc.run("verify", "-ca", p("ca.crt"), "-crt", p(name+".crt")); !ok {
			t.Errorf("%s: nebula-cert verify: %s", name, errLine)
		}
	}
	for _, f := range []string{"ca", "plain", "multiip", "subnets", "inpub"} {
		for _, flag := range []string{"-json", ""} {
			args := []string{"print", "-path", p(f + ".crt")}
			if flag != "" {
				args = append(args, flag)
			}
			want := nc.mustRun(args...)
			if got := mustOK(t, meshCert(t, now(), args...)).stdout; got != want {
				t.Errorf("%s print %s differs:\nmesh-cert   %s\nnebula-cert %s", f, flag, got, want)
			}
		}
	}
	// The CA key mesh-cert wrote signs with nebula-cert too.
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "byneb", "-ip", "10.43.0.9/16",
		"-out-crt", p("byneb.crt"), "-out-key", p("byneb.key"))
	mustOK(t, meshCert(t, now(), "verify", "-ca", p("ca.crt"), "-crt", p("byneb.crt")))
}

func TestInteropNebulaCertFilesPassMeshCert(t *testing.T) {
	nc := newNebulaCert(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	nc.mustRun("ca", "-name", "Neb CA", "-groups", "a,b", "-ips", "10.50.0.0/16", "-subnets", "172.16.0.0/12",
		"-out-crt", p("ca.crt"), "-out-key", p("ca.key"))
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "h1", "-ip", "10.50.1.1/16",
		"-groups", "a", "-subnets", "172.16.1.0/24", "-out-crt", p("h1.crt"), "-out-key", p("h1.key"))
	mustOK(t, meshCert(t, now(), "keygen", "-out-key", p("mk.key"), "-out-pub", p("mk.pub")))
	nc.mustRun("sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "h2", "-ip", "10.50.1.2/16",
		"-in-pub", p("mk.pub"), "-out-crt", p("h2.crt"))
	// mesh-cert signs with nebula-cert's CA key, and nebula-cert accepts the result.
	mustOK(t, meshCert(t, now(), "sign", "-ca-crt", p("ca.crt"), "-ca-key", p("ca.key"), "-name", "h3",
		"-ip", "10.50.1.3/16", "-groups", "b", "-out-crt", p("h3.crt"), "-out-key", p("h3.key")))
	for _, h := range []string{"h1", "h2", "h3"} {
		r := meshCert(t, now(), "verify", "-ca", p("ca.crt"), "-crt", p(h+".crt"))
		if r.code != 0 {
			t.Errorf("%s: mesh-cert verify: %s", h, r.stderr)
		}
		if _, errLine, ok := nc.run("verify", "-ca", p("ca.crt"), "-crt", p(h+".crt")); !ok {
			t.Errorf("%s: nebula-cert verify: %s", h, errLine)
		}
	}
	// The keys nebula-cert wrote match its certs by our rules too.
	for _, pair := range [][2]string{{"h1.crt", "h1.key"}, {"h2.crt", "mk.key"}} {
		c := readCert(t, p(pair[0]))
		b, _ := os.ReadFile(p(pair[1]))
		k, _, err := cert.UnmarshalX25519PrivateKey(b)
		if err != nil || c.VerifyPrivateKey(k) != nil {
			t.Errorf("%s and %s do not match: %v", pair[0], pair[1], err)
		}
	}
}

// TestInteropTamperedCertsRejectedByBoth flips every byte of a host cert in turn (one
// byte at a time) and has both tools verify the result.
func TestInteropTamperedCertsRejectedByBoth(t *testing.T) {
	testenv.SkipShort(t)
	nc := newNebulaCert(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	ca := certtest.NewCA(t, "ca", certtest.WithGroups("web"), certtest.WithIPs("10.42.0.0/16"))
	h := ca.Issue(t, "host", "10.42.0.1/16", certtest.WithGroups("web"), certtest.WithSubnets("192.168.1.0/24"))
	os.WriteFile(p("ca.crt"), ca.PEM, 0o644)
	raw, _ := h.Cert.Marshal()
	for i := range raw {
		for _, mask := range []byte{0x01, 0x80} {
			b := bytes.Clone(raw)
			b[i] ^= mask
			os.WriteFile(p("t.crt"), pem.EncodeToMemory(&pem.Block{Type: cert.PEMCertificate, Bytes: b}), 0o644)
			r := meshCert(t, now(), "verify", "-ca", p("ca.crt"), "-crt", p("t.crt"))
			_, nebErr, nebOK := nc.run("verify", "-ca", p("ca.crt"), "-crt", p("t.crt"))
			if nebOK || r.code == 0 {
				t.Errorf("byte %d ^ %#x: accepted by nebula-cert=%v mesh-cert=%v", i, mask, nebOK, r.code == 0)
			}
			// Where both could decode it, they must give the same reason.
			ours, _, _ := strings.Cut(r.stderr, "\n")
			if _, err := cert.Unmarshal(b); err == nil && ours != nebErr {
				t.Errorf("byte %d ^ %#x: mesh-cert %q, nebula-cert %q", i, mask, ours, nebErr)
			}
		}
	}
}

// TestInteropRefusalsMatchNebulaReasons writes certificates that break each rule and
// expects the same error line from both tools' verify.
func TestInteropRefusalsMatchNebulaReasons(t *testing.T) {
	nc := newNebulaCert(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	n := certtest.Now()
	ca := certtest.NewCA(t, "ca", certtest.WithValidity(n.Add(-48*time.Hour), n.Add(48*time.Hour)),
		certtest.WithGroups("web", "ssh"), certtest.WithIPs("10.42.0.0/16", "10.60.0.0/24"),
		certtest.WithSubnets("192.168.0.0/16"))
	old := certtest.NewCA(t, "old", certtest.WithValidity(n.Add(-48*time.Hour), n.Add(-24*time.Hour)))
	other := certtest.NewCA(t, "other")
	os.WriteFile(p("ca.crt"), certtest.Bundle(ca, other), 0o644)
	os.WriteFile(p("old.crt"), old.PEM, 0o644)
	cases := []struct {
		name string
		h    *certtest.Host
		want string
	}{
		{"valid", ca.Issue(t, "ok", "10.42.0.1/16", certtest.WithGroups("web"), certtest.WithIPs("10.60.0.5/28"),
			certtest.WithSubnets("192.168.4.0/24")), ""},
		{"IP outside", ca.NewHost(t, "x", "10.50.0.20/16"),
			"certificate contained an ip assignment outside the limitations of the signing ca: 10.50.0.20/16"},
		{"mask shorter than CA's", ca.NewHost(t, "x", "10.42.0.21/8"),
			"certificate contained an ip assignment outside the limitations of the signing ca: 10.42.0.21/8"},
		{"second IP outside", ca.Issue(t, "x", "10.42.0.1/16", certtest.WithIPs("10.60.1.1/24")),
			"certificate contained an ip assignment outside the limitations of the signing ca: 10.60.1.1/24"},
		{"group", ca.NewHost(t, "x", "10.42.0.2/16", "web", "db"),
			"certificate contained a group not present on the signing ca: db"},
		{"subnet", ca.Issue(t, "x", "10.42.0.3/16", certtest.WithSubnets("172.16.0.0/24")),
			"certificate contained a subnet assignment outside the limitations of the signing ca: 172.16.0.0/24"},
		{"subnet wider", ca.Issue(t, "x", "10.42.0.3/16", certtest.WithSubnets("192.168.0.0/15")),
			"certificate contained a subnet assignment outside the limitations of the signing ca: 192.168.0.0/15"},
		{"outlives CA", ca.Issue(t, "x", "10.42.0.4/16", certtest.WithValidity(n.Add(-time.Hour), n.Add(49*time.Hour))),
			"certificate expires after signing certificate"},
		{"predates CA", ca.Issue(t, "x", "10.42.0.4/16", certtest.WithValidity(n.Add(-49*time.Hour), n.Add(time.Hour))),
			"certificate is valid before the signing certificate"},
		{"expired", ca.Issue(t, "x", "10.42.0.5/16", certtest.WithValidity(n.Add(-2*time.Hour), n.Add(-time.Hour))),
			"certificate is expired"},
		{"not yet valid", ca.Issue(t, "x", "10.42.0.5/16", certtest.WithValidity(n.Add(time.Hour), n.Add(2*time.Hour))),
			"certificate is expired"},
		{"unknown CA", certtest.NewCA(t, "stranger").NewHost(t, "x", "10.42.0.6/16"), "could not find ca for the certificate"},
		{"other CA's signature", other.Issue(t, "x", "10.42.0.7/16", certtest.WithIssuer(ca.Cert.Fingerprint())),
			"certificate signature did not match"},
		{"CA as host", &certtest.Host{PEM: ca.PEM}, "no issuer in certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(p("h.crt"), c.h.PEM, 0o644)
			r := meshCert(t, now(), "verify", "-ca", p("ca.crt"), "-crt", p("h.crt"))
			_, nebErr, nebOK := nc.run("verify", "-ca", p("ca.crt"), "-crt", p("h.crt"))
			ours, _, _ := strings.Cut(r.stderr, "\n")
			if c.want == "" {
				if r.code != 0 || !nebOK {
					t.Fatalf("valid cert refused: mesh-cert %q, nebula-cert %q", ours, nebErr)
				}
				return
			}
			want := "Error: " + c.want
			if ours != want || nebErr != want {
				t.Errorf("mesh-cert %q\nnebula-cert %q\nwant %q", ours, nebErr, want)
			}
		})
	}

	// An expired CA: nebula-cert verify refuses the whole bundle, while mesh-cert, like a
	// node loading pki.ca, keeps it with a warning and then refuses the cert it issued.
	// Both refuse; the reasons differ on purpose.
	os.WriteFile(p("h.crt"), old.NewHost(t, "x", "10.1.0.1/16").PEM, 0o644)
	r := meshCert(t, now(), "verify", "-ca", p("old.crt"), "-crt", p("h.crt"))
	_, nebErr, nebOK := nc.run("verify", "-ca", p("old.crt"), "-crt", p("h.crt"))
	if nebOK || nebErr != "Error: error while adding ca cert to pool: old: certificate is expired" {
		t.Errorf("nebula-cert on an expired CA: %q", nebErr)
	}
	if r.code == 0 || !strings.Contains(r.stderr, "root certificate is expired") {
		t.Errorf("mesh-cert on an expired CA: %q", r.stderr)
	}
}

// TestInteropReencodedCertsKeepNebulaFingerprint feeds nebula-cert non-canonical
// re-encodings of one signed cert. Nebula decodes and re-marshals, so it accepts them under
// the original fingerprint; mesh-cert is stricter and refuses them as malformed. Either
// way a re-encoding never becomes a second identity for the blocklist (SECURITY-NOTES 1).
// This is the one known difference in accept sets, and it is deliberate: Nebula itself
// only ever sends canonical encodings.
func TestInteropReencodedCertsKeepNebulaFingerprint(t *testing.T) {
	nc := newNebulaCert(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	ca := certtest.NewCA(t, "ca")
	h := ca.Issue(t, "host", "10.42.0.1/16", certtest.WithGroups("a", "b"), certtest.WithSubnets("192.168.1.0/24"))
	os.WriteFile(p("ca.crt"), ca.PEM, 0o644)
	raw, _ := h.Cert.Marshal()
	want := h.Cert.Fingerprint()

	// Split the canonical encoding into its top-level and details fields.
	details, sig := splitTop(t, raw)
	dfs := splitFields(t, details)
	enc := func(detailFields [][]byte, trailer ...byte) []byte {
		d := bytes.Join(detailFields, nil)
		out := append([]byte{0x0a}, uvarint(uint64(len(d)))...)
		out = append(append(out, d...), sig...)
		return append(out, trailer...)
	}
	swap := func(i, j int) [][]byte {
		c := append([][]byte(nil), dfs...)
		c[i], c[j] = c[j], c[i]
		return c
	}
	withUnknown := append(append([][]byte(nil), dfs...), []byte{0x52, 0x01, 0x00}) // field 10, bytes
	nonMinimalTime := append([][]byte(nil), dfs...)
	for i, f := range nonMinimalTime {
		if f[0] == 0x28 { // NotBefore: pad its varint with a redundant continuation byte
			v := append([]byte(nil), f[1:]...)
			v[len(v)-1] |= 0x80
			nonMinimalTime[i] = append(append([]byte{0x28}, v...), 0x00)
		}
	}
	variants := map[string][]byte{
		"name after ips":        enc(swap(0, 1)),
		"unknown details field": enc(withUnknown),
		"non-minimal notBefore": enc(nonMinimalTime),
	}
	for name, b := range variants {
		t.Run(name, func(t *testing.T) {
			os.WriteFile(p("v.crt"), pem.EncodeToMemory(&pem.Block{Type: cert.PEMCertificate, Bytes: b}), 0o644)
			_, nebErr, nebOK := nc.run("verify", "-ca", p("ca.crt"), "-crt", p("v.crt"))
			if nebOK {
				out := nc.mustRun("print", "-json", "-path", p("v.crt"))
				if !strings.Contains(out, `"fingerprint":"`+want+`"`) {
					t.Errorf("nebula-cert accepted a re-encoding under another fingerprint: %s", out)
				}
			} else {
				// Each variant decodes to the signed struct, so Nebula must accept it; if not,
				// the variant is broken and the test would prove nothing.
				t.Errorf("nebula-cert refused the re-encoding: %s", nebErr)
			}
			r := meshCert(t, now(), "verify", "-ca", p("ca.crt"), "-crt", p("v.crt"))
			if r.code == 0 || !strings.Contains(r.stderr, "malformed certificate") {
				t.Errorf("mesh-cert should refuse the encoding as malformed: exit %d, %q", r.code, r.stderr)
			}
		})
	}
}

// splitFields cuts canonical protobuf into whole fields (tag, length and value).
func splitFields(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var fields [][]byte
	for off := 0; off < len(b); {
		start := off
		tag := b[off]
		off++
		switch tag & 7 {
		case 0:
			for b[off]&0x80 != 0 {
				off++
			}
			off++
		case 2:
			n, w := readUvarint(b[off:])
			off += w + int(n)
		default:
			t.Fatalf("unexpected wire type in %x", b)
		}
		fields = append(fields, b[start:off])
	}
	return fields
}

// splitTop returns the value of top-level field 1 (the details) and the remaining bytes.
func splitTop(t *testing.T, b []byte) ([]byte, []byte) {
	t.Helper()
	fields := splitFields(t, b)
	_, w := readUvarint(fields[0][1:])
	return fields[0][1+w:], bytes.Join(fields[1:], nil)
}

func readUvarint(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

func uvarint(v uint64) []byte {
	var out []byte
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}
