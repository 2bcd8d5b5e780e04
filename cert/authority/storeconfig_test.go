package authority_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/cert/authority"
)

func TestStoreSectionForms(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.yml")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	base := "ca: [{crt: ca.crt}]\nstate_dir: st\n"
	for _, tc := range []struct {
		yml, wantErr string
		check        func(c *authority.Config)
	}{
		{yml: "", check: func(c *authority.Config) {
			if c.Store.Type != authority.StoreBolt || c.Store.Path != filepath.Join(dir, "st", "ca.db") {
				t.Errorf("default store = %+v", c.Store)
			}
		}},
		{yml: "store: x.db\n", check: func(c *authority.Config) {
			if c.Store.Type != authority.StoreBolt || c.Store.Path != filepath.Join(dir, "x.db") {
				t.Errorf("short form = %+v", c.Store)
			}
		}},
		{yml: "store: {type: postgres, dsn_file: secret/dsn}\n", check: func(c *authority.Config) {
			if c.Store.DSNFile != filepath.Join(dir, "secret", "dsn") {
				t.Errorf("dsn_file = %q", c.Store.DSNFile)
			}
			must(os.MkdirAll(filepath.Join(dir, "secret"), 0o700))
			must(os.WriteFile(c.Store.DSNFile, []byte(" host=/run/pg dbname=ca \n"), 0o600))
			if d, err := c.Store.ConnString(); err != nil || d != "host=/run/pg dbname=ca" {
				t.Errorf("ConnString = %q, %v", d, err)
			}
			if strings.Contains(c.Store.String(), "host=") {
				t.Errorf("String() shows the DSN: %s", c.Store.String())
			}
		}},
		{yml: "store: {type: postgres, dsn_env: MESHNODE_TEST_UNSET_DSN}\n", check: func(c *authority.Config) {
			if _, err := c.Store.ConnString(); err == nil || !strings.Contains(err.Error(), "MESHNODE_TEST_UNSET_DSN") {
				t.Errorf("unset env: %v", err)
			}
		}},
		{yml: "store: {type: postgres}\n", wantErr: "exactly one of dsn, dsn_file, dsn_env"},
		{yml: "store: {type: postgres, dsn: a, dsn_env: B}\n", wantErr: "exactly one of"},
		{yml: "store: {type: mysql}\n", wantErr: "store.type"},
		{yml: "store: {type: bolt, dsn: x}\n", wantErr: "for type postgres"},
		{yml: "store: {type: postgres, dsn: x, path: y}\n", wantErr: "store.path"},
		{yml: "store: {type: postgres, dns: x}\n", wantErr: "field dns not found in store"},
		{yml: "store: [a]\n", wantErr: "want a path or a mapping"},
		{yml: "urls: [https://a:1, https://b:2]\n", check: func(c *authority.Config) {
			if c.URL != "https://a:1,https://b:2" {
				t.Errorf("URL from urls = %q", c.URL)
			}
		}},
		{yml: "urls: [https://a:1]\nurl: https://b:2\n", wantErr: "url or urls"},
		{yml: "urls: [http://a:1]\n", wantErr: "urls[0]"},
	} {
		must(os.WriteFile(path, []byte(base+tc.yml), 0o600))
		c, err := authority.LoadConfig(path)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one saying %q", tc.yml, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.yml, err)
		default:
			tc.check(c)
		}
	}
}

func TestTokenCarriesSeveralServiceURLs(t *testing.T) {
	tok := authority.Token{URL: "https://a:1,https://b:2", Pin: make([]byte, 32), Secret: make([]byte, 32)}
	got, err := authority.ParseToken(tok.String())
	if err != nil || got.URL != tok.URL {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	tok.URL = "https://a:1,ftp://b"
	if _, err := authority.ParseToken(tok.String()); err == nil || !strings.Contains(err.Error(), "ftp://b") {
		t.Errorf("bad second URL: %v", err)
	}
}
