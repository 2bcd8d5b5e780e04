package console_test

import (
	"encoding/base64"
	"html"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/internal/testenv"
)

// TestDeviceQRCodesAndSiteFileWorkWithNebula holds the "add a device" output to Nebula's own
// tools, as a phone would use it: the key pair is made by nebula-cert (the app makes it the
// same way), the QR codes on the page must decode (zbarimg) to PEM that nebula-cert 1.6.1
// and 1.11.1 print, and the site file with the device's key added must pass nebula -test.
func TestDeviceQRCodesAndSiteFileWorkWithNebula(t *testing.T) {
	zbar := testenv.RequireBinary(t, "zbarimg")
	type tool struct{ name, cert, nebula string }
	tools := []tool{{"1.6.1", testenv.RequireBinary(t, "nebula-cert"), testenv.RequireBinary(t, "nebula")},
		{"1.11.1", testenv.RequireNebulaV2(t, "nebula-cert"), testenv.RequireNebulaV2(t, "nebula")}}
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "device.key"), filepath.Join(dir, "device.pub")
	testenv.Run(t, tools[0].cert, "keygen", "-out-key", key, "-out-pub", pub)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := post(t, c, f.srv.URL+"/devices/new", url.Values{"csrf": {csrf}, "name": {"anna-phone"}, "cidr": {"family"}, "groups": {"family"}, "public_key": {string(pubPEM)}})
	if resp.StatusCode != 303 {
		t.Fatalf("add device: %s %s", resp.Status, body)
	}
	_, page := get(t, c, f.srv.URL+resp.Header.Get("Location"))
	for _, id := range []string{"cert-qr", "ca-qr"} {
		m := regexp.MustCompile(`id="` + id + `" src="data:image/png;base64,([^"]+)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no %s image on the page", id)
		}
		png, err := base64.StdEncoding.DecodeString(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(dir, id+".png")
		must(t, os.WriteFile(img, png, 0o644))
		out, err := exec.Command(zbar, "--raw", "-q", img).Output()
		if err != nil {
			t.Fatalf("zbarimg %s: %v", id, err)
		}
		pemText := strings.TrimSuffix(string(out), "\n")
		if !strings.HasPrefix(pemText, "-----BEGIN NEBULA CERTIFICATE") {
			t.Fatalf("%s decodes to %q", id, pemText)
		}
		crt := filepath.Join(dir, id+".crt")
		must(t, os.WriteFile(crt, []byte(pemText), 0o644))
		for _, tl := range tools {
			out := testenv.Run(t, tl.cert, "print", "-path", crt)
			want := "anna-phone"
			if id == "ca-qr" {
				want = "test-ca"
			}
			if !strings.Contains(out, want) {
				t.Errorf("nebula-cert %s print of %s: %s", tl.name, id, out)
			}
		}
		if id == "cert-qr" {
			// The certificate is for the key the device made: nebula-cert verifies it against the CA.
			caPath := filepath.Join(dir, "ca.crt")
			must(t, os.WriteFile(caPath, f.ca.PEM, 0o644))
			for _, tl := range tools {
				testenv.Run(t, tl.cert, "verify", "-ca", caPath, "-crt", crt)
			}
		}
	}
	code, site := get(t, c, f.srv.URL+"/devices/site.yml?host=anna-phone")
	if code != 200 {
		t.Fatalf("site file: %d", code)
	}
	// The app adds the key it holds; nebula -test checks the key matches the certificate.
	cfg := filepath.Join(dir, "site.yml")
	must(t, os.WriteFile(cfg, []byte(strings.Replace(site, "pki:\n", "pki:\n    key: "+key+"\n", 1)), 0o600))
	for _, tl := range tools {
		if out, err := exec.Command(tl.nebula, "-test", "-config", cfg).CombinedOutput(); err != nil {
			t.Errorf("nebula %s -test of the site file: %v\n%s\n%s", tl.name, err, out, site)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
