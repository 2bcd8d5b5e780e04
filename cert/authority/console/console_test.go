package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/console"
	"github.com/meshnode/meshnode/cert/certtest"
)

// cheap keeps the tests' many sign-ins fast; production accounts use DefaultArgon2.
var cheap = console.Argon2Params{Time: 1, Memory: 64, Threads: 1}

const password = "correct horse battery"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	a      *authority.Authority
	ca     *certtest.CA
	c      *console.Console
	srv    *httptest.Server
	clock  *clock
	admins string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca := certtest.NewCA(t, "test-ca", certtest.WithIPs("10.42.0.0/16"))
	f := &fixture{ca: ca, clock: &clock{t: certtest.Now()}}
	_, svc, err := cert.GenerateX25519()
	if err != nil {
		t.Fatal(err)
	}
	f.a, err = authority.New(authority.Options{Store: authority.NewMemStore(),
		CAs:        []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}},
		ServiceKey: svc, URL: "https://127.0.0.1:8443", Pin: make([]byte, 32),
		Lighthouses:  []authority.Lighthouse{{VpnIP: netip.MustParseAddr("10.42.0.1"), Addrs: []string{"192.0.2.1:4242"}}},
		CertDuration: 24 * time.Hour, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.a.SyncCIDRs([]authority.CIDR{
		{Name: "mesh", Prefix: netip.MustParsePrefix("10.42.0.0/16")},
		{Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")},
		{Name: "family", Prefix: netip.MustParsePrefix("10.42.100.0/24")},
	}); err != nil {
		t.Fatal(err)
	}
	f.admins = filepath.Join(t.TempDir(), "admins.json")
	if err := console.AddAccount(f.admins, "alice", password, false, cheap, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	f.c, err = console.New(console.Options{Authority: f.a, AdminsFile: f.admins, Now: f.clock.Now,
		Session: time.Hour, IdleTimeout: 20 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewTLSServer(f.c.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

// browser is a client with a cookie jar that does not follow redirects, so tests see them.
func (f *fixture) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := f.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs c in as alice and returns the session's CSRF token.
func (f *fixture) signIn(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, body := post(t, c, f.srv.URL+"/login", url.Values{"name": {"alice"}, "password": {password}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %s: %s", resp.Status, body)
	}
	ck := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-meshca=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=3600"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q lacks %s", ck, want)
		}
	}
	_, page := get(t, c, f.srv.URL+"/")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the front page: %s", page)
	}
	return m[1]
}

func TestSignInInviteRevokeAreAuditedWithTheAdmin(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	resp, body := post(t, c, f.srv.URL+"/invite", url.Values{"csrf": {csrf}, "name": {"laptop1"}, "cidr": {"servers"}, "groups": {"dev, ops"}, "ttl": {"24h"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "meshnode enroll -token &#39;mesh1") {
		t.Fatalf("invite: %s: %s", resp.Status, body)
	}
	if !strings.Contains(body, `src="data:image/png;base64,`) {
		t.Error("invite result has no QR code")
	}
	_, tree := get(t, c, f.srv.URL+"/")
	if !strings.Contains(tree, "laptop1") || !strings.Contains(tree, "10.42.0.1") && !strings.Contains(tree, "10.42.0.2") {
		t.Errorf("tree lacks the invited host: %s", tree)
	}
	if code, page := get(t, c, f.srv.URL+"/revoke?host=laptop1"); code != 200 || !strings.Contains(page, "Yes, revoke laptop1") {
		t.Fatalf("revoke confirmation: %d %s", code, page)
	}
	resp, body = post(t, c, f.srv.URL+"/revoke", url.Values{"csrf": {csrf}, "host": {"laptop1"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "laptop1 is revoked") {
		t.Fatalf("revoke: %s: %s", resp.Status, body)
	}
	es, err := f.a.Audit()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Action] = e.Admin
	}
	for _, a := range []string{"console-login", "invite", "revoke"} {
		if got[a] != "alice" {
			t.Errorf("audit %s by %q, want alice (log %+v)", a, got[a], es)
		}
	}
	_, page := get(t, c, f.srv.URL+"/audit?admin=alice&action=revoke")
	if !strings.Contains(page, "<td>revoke</td><td>laptop1</td><td>alice</td>") || strings.Contains(page, "<td>invite</td>") {
		t.Errorf("audit filter: %s", page)
	}
	for _, p := range []string{"/status", "/warnings"} {
		if code, page := get(t, c, f.srv.URL+p); code != 200 {
			t.Errorf("%s: %d %s", p, code, page)
		}
	}
}

func TestWrongPasswordIsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	for _, cred := range [][2]string{{"alice", "wrong password!"}, {"mallory", password}, {"alice", ""}} {
		resp, body := post(t, c, f.srv.URL+"/login", url.Values{"name": {cred[0]}, "password": {cred[1]}})
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong name or password") || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s/%q: %s %s", cred[0], cred[1], resp.Status, resp.Header.Get("Set-Cookie"))
		}
	}
	if code, _ := get(t, c, f.srv.URL+"/"); code != http.StatusSeeOther {
		t.Errorf("front page after failed sign-ins: %d, want a redirect to sign in", code)
	}
}

func TestSignInIsRateLimitedPerSourceAndAccount(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	codes := []int{}
	for range 7 {
		resp, _ := post(t, c, f.srv.URL+"/login", url.Values{"name": {"alice"}, "password": {"guess guess guess"}})
		codes = append(codes, resp.StatusCode)
	}
	if codes[4] != http.StatusUnauthorized || codes[5] != http.StatusTooManyRequests || codes[6] != http.StatusTooManyRequests {
		t.Fatalf("codes %v: want 5 refusals, then rate limited", codes)
	}
	// Even the right password waits: the limit is on attempts, not on failures.
	if resp, _ := post(t, c, f.srv.URL+"/login", url.Values{"name": {"alice"}, "password": {password}}); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("right password while limited: %s", resp.Status)
	}
	f.clock.Add(15 * time.Second) // one attempt back
	if resp, _ := post(t, c, f.srv.URL+"/login", url.Values{"name": {"alice"}, "password": {password}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after waiting: %s", resp.Status)
	}
}

func TestChangesWithoutTheCSRFTokenAreRefused(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"missing", url.Values{"name": {"x1"}, "cidr": {"servers"}, "ttl": {"1h"}}, nil},
		{"wrong", url.Values{"csrf": {csrf + "x"}, "name": {"x2"}, "cidr": {"servers"}, "ttl": {"1h"}}, nil},
		{"cross-site", url.Values{"csrf": {csrf}, "name": {"x3"}, "cidr": {"servers"}, "ttl": {"1h"}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		req, _ := http.NewRequest("POST", f.srv.URL+"/invite", strings.NewReader(tc.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", tc.name, resp.Status)
		}
	}
	if hs, _ := f.a.Hosts(); len(hs) != 0 {
		t.Errorf("a refused request invited %v", hs)
	}
}

func TestExpiredSessionIsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	f.clock.Add(21 * time.Minute) // idle timeout
	if code, _ := get(t, c, f.srv.URL+"/"); code != http.StatusSeeOther {
		t.Errorf("idle session: %d", code)
	}
	resp, _ := post(t, c, f.srv.URL+"/invite", url.Values{"csrf": {csrf}, "name": {"x"}, "cidr": {"servers"}, "ttl": {"1h"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST with an idle session: %s", resp.Status)
	}
	// An active session still ends at its absolute limit.
	csrf = f.signIn(t, c)
	for range 4 {
		f.clock.Add(15 * time.Minute)
		get(t, c, f.srv.URL+"/")
	}
	if code, _ := get(t, c, f.srv.URL+"/"); code != http.StatusSeeOther {
		t.Errorf("session past its lifetime: %d", code)
	}
}

func TestRequestsWithoutAnAdminSessionAreRefused(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	for _, p := range []string{"/", "/audit", "/status", "/warnings", "/invite", "/devices/new", "/devices/site.yml?host=x", "/revoke?host=x"} {
		resp, err := c.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
			t.Errorf("GET %s: %s → %s", p, resp.Status, resp.Header.Get("Location"))
		}
	}
	// A forged cookie is no session either.
	u, _ := url.Parse(f.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "__Host-meshca", Value: strings.Repeat("A", 43)}})
	for _, p := range []string{"/invite", "/revoke", "/devices/new", "/logout"} {
		resp, _ := post(t, c, f.srv.URL+p, url.Values{"csrf": {"x"}, "name": {"h"}, "host": {"h"}, "cidr": {"servers"}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s: %s", p, resp.Status)
		}
	}
	// A removed account's session ends at once.
	c2 := f.browser(t)
	f.signIn(t, c2)
	if err := console.RemoveAccount(f.admins, "alice"); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, c2, f.srv.URL+"/"); code != http.StatusSeeOther {
		t.Errorf("session of a removed account: %d", code)
	}
}

func TestPagesEscapeWhatUsersTyped(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	_, body := post(t, c, f.srv.URL+"/invite", url.Values{"csrf": {csrf}, "name": {"<script>x</script>"}, "cidr": {"servers"}, "ttl": {"1h"}})
	if strings.Contains(body, "<script>") {
		t.Errorf("unescaped input on the page: %s", body)
	}
}

func TestAddDeviceAndReissue(t *testing.T) {
	f := newFixture(t)
	c := f.browser(t)
	csrf := f.signIn(t, c)
	pub, _, err := cert.GenerateX25519()
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := string(cert.MarshalX25519PublicKey(pub))
	resp, body := post(t, c, f.srv.URL+"/devices/new", url.Values{"csrf": {csrf}, "name": {"anna-phone"}, "cidr": {"family"}, "groups": {"family"}, "public_key": {pubPEM}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add device: %s: %s", resp.Status, body)
	}
	code, page := get(t, c, f.srv.URL+resp.Header.Get("Location"))
	if code != 200 || !strings.Contains(page, `id="cert-qr"`) || !strings.Contains(page, "10.42.100.1") {
		t.Fatalf("device page: %d %s", code, page)
	}
	h, p, err := f.a.DeviceCertPEM("anna-phone")
	if err != nil {
		t.Fatal(err)
	}
	crt, _, err := cert.UnmarshalPEM(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(crt.Details.PublicKey) != string(pub) || h.Kind != authority.KindDevice || crt.Details.NotAfter.Sub(crt.Details.NotBefore) < 300*24*time.Hour {
		t.Errorf("device cert: key match %v, kind %q, life %v", string(crt.Details.PublicKey) == string(pub), h.Kind, crt.Details.NotAfter.Sub(crt.Details.NotBefore))
	}
	code, site := get(t, c, f.srv.URL+"/devices/site.yml?host=anna-phone")
	if code != 200 || !strings.Contains(site, "NEBULA CERTIFICATE") || !strings.Contains(site, "192.0.2.1:4242") {
		t.Errorf("site file: %d %s", code, site)
	}
	// Same key: a new certificate, nothing revoked.
	f.clock.Add(10 * time.Minute)
	resp, _ = post(t, c, f.srv.URL+"/devices/reissue", url.Values{"csrf": {csrf}, "host": {"anna-phone"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "revoked=0") {
		t.Fatalf("re-issue same key: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	// New key: the old key's certificates are revoked.
	pub2, _, _ := cert.GenerateX25519()
	resp, _ = post(t, c, f.srv.URL+"/devices/reissue", url.Values{"csrf": {csrf}, "host": {"anna-phone"}, "public_key": {string(cert.MarshalX25519PublicKey(pub2))}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "revoked=2") {
		t.Fatalf("re-issue new key: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	var actions []string
	es, _ := f.a.Audit()
	for _, e := range es {
		if e.Host == "anna-phone" {
			actions = append(actions, e.Action+"/"+e.Admin)
		}
	}
	if strings.Join(actions, " ") != "device-add/alice device-reissue/alice device-rekey/alice" {
		t.Errorf("audit: %v", actions)
	}
	// A device near its end is listed for re-import.
	f.clock.Add(340 * 24 * time.Hour)
	f.signIn(t, c)
	if _, page := get(t, c, f.srv.URL+"/warnings"); !strings.Contains(page, "import it on the device again") {
		t.Errorf("warnings: %s", page)
	}
}
