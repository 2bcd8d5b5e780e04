package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConsoleGuideWorks runs section 12 of docs/GETTING-STARTED.md ("Run it from a
// browser") on section 7's ca.yml: the console block's commands run in-process (a line the
// test does not know fails it, so the guide cannot drift), on loopback ports of its own
// instead of 8443/8444. Then it does what the reader does in the browser: checks the
// certificate against the logged tls_pin and signs in with the password admin add printed.
func TestConsoleGuideWorks(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(moduleRootDir(t), "docs", "GETTING-STARTED.md"))
	must(t, err)
	caYML := regexp.MustCompile("(?s)# on admin\ncat > ca.yml <<'EOF'\n(.*?)\nEOF\n").FindSubmatch(md)
	block := regexp.MustCompile("(?s)```sh\n# console: on admin\n(.*?)```").FindSubmatch(md)
	if caYML == nil || block == nil {
		t.Fatal("the guide has no section 7 ca.yml or no console block")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	yml := strings.NewReplacer("0.0.0.0:8443", "127.0.0.1:0", "https://203.0.113.5:8443", "https://127.0.0.1:0").Replace(string(caYML[1]))
	must(t, os.WriteFile("ca.yml", []byte(yml+"\n"), 0o600))
	if r := meshCert(t, time.Now(), "ca", "-name", "guide CA", "-out-crt", "ca.crt", "-out-key", "ca.key"); r.code != 0 {
		t.Fatal(r.stderr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	log := &lockedBuffer{}
	var password string
	lines := strings.Split(strings.TrimSpace(string(block[1])), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == "cat >> ca.yml <<'EOF'":
			var add []string
			for i++; lines[i] != "EOF"; i++ {
				add = append(add, strings.Replace(lines[i], "127.0.0.1:8444", "127.0.0.1:0", 1))
			}
			f, err := os.OpenFile("ca.yml", os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteString(strings.Join(add, "\n") + "\n")
			must(t, errors.Join(err, f.Close()))
		case strings.HasPrefix(l, "mesh-cert admin add "):
			r := meshCert(t, time.Now(), strings.Fields(l)[1:]...)
			m := regexp.MustCompile(`(?m)^password: (\S+)$`).FindStringSubmatch(r.stdout)
			if r.code != 0 || m == nil {
				t.Fatalf("%s: exit %d\n%s%s", l, r.code, r.stdout, r.stderr)
			}
			password = m[1]
		case l == "mesh-cert serve -config ca.yml":
			go func() {
				served <- runServe(ctx, &env{stdout: io.Discard, stderr: log, now: time.Now}, "ca.yml", nil)
			}()
		default:
			t.Fatalf("the console guide test does not know the line %q", l)
		}
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var addr, pin string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if m := regexp.MustCompile(`web console listening" addr=https://(\S+) admins=1 tls_pin=([0-9a-f]+)`).FindStringSubmatch(log.String()); m != nil {
			addr, pin = m[1], m[2]
		} else if time.Now().After(deadline) {
			t.Fatalf("the console did not start:\n%s", log.String())
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}

	// What the reader checks in the browser: the certificate's SHA-256 is the logged pin.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if hex.EncodeToString(sum[:]) != pin {
				return errors.New("the console's certificate is not the one tls_pin names")
			}
			return nil
		}}}}
	resp, err := c.PostForm("https://"+addr+"/login", url.Values{"name": {"alice"}, "password": {password}})
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "apps") || !strings.Contains(string(body), "Sign out alice") {
		t.Fatalf("signed in: %s\n%s", resp.Status, body)
	}
}
