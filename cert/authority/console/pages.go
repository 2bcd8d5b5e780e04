package console

import (
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/skip2/go-qrcode"

	"github.com/meshnode/meshnode/cert/authority"
)

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}

// page is what every template gets; Data is the page's own.
type page struct {
	Title string
	Nav   string
	Admin string
	CSRF  string
	Error string
	Data  any
}

func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	t, ok := c.pages[name]
	if !ok {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		c.o.Logger.Error("console: template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, b.String())
}

func (c *Console) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, status, "refused.html", page{Title: "Refused", Error: msg})
}

// failed shows a domain error on the page it came from, with the API's status for it.
func (c *Console) failed(w http.ResponseWriter, name string, p page, err error) {
	_, status := authority.ErrorCode(err)
	if status == http.StatusInternalServerError {
		c.o.Logger.Error("console: request failed", "page", name, "err", err)
		p.Error = "Internal error; the service log has the details."
	} else {
		p.Error = err.Error()
	}
	c.render(w, status, name, p)
}

func (c *Console) base(se session, title, nav string) page {
	return page{Title: title, Nav: nav, Admin: se.admin, CSRF: se.csrf}
}

func (c *Console) auditEvent(action, admin, host, detail string) {
	if err := c.a.RecordAudit(authority.AuditEntry{Action: action, Admin: admin, Host: host, Detail: detail}); err != nil {
		c.o.Logger.Error("console: audit", "action", action, "err", err)
	}
}

func qrDataURI(text string) (template.URL, error) {
	png, err := qrcode.Encode(text, qrcode.Medium, -5)
	if err != nil {
		// A long CA bundle (during a rotation) may not fit at medium error correction.
		if png, err = qrcode.Encode(text, qrcode.Low, -4); err != nil {
			return "", err
		}
	}
	// A data: URL of our own PNG; template.URL keeps html/template from rejecting it.
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)), nil
}

// --- sign-in ---

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Sign in"}
	if r.URL.Query().Has("expired") {
		p.Error = "Your session has ended. Sign in again."
	}
	c.render(w, http.StatusOK, "login.html", p)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		c.refuse(w, r, http.StatusForbidden, "Refused: the request came from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	if len(name) > 64 {
		name = name[:64]
	}
	now, src := c.o.Now(), sourceAddr(r)
	if !c.logins.allow(now, "source "+src, "account "+name) {
		c.o.Logger.Warn("console: sign-in rate limited", "source", src)
		c.render(w, http.StatusTooManyRequests, "login.html", page{Title: "Sign in", Error: "Too many attempts. Wait a minute and try again."})
		return
	}
	if !c.checkLogin(name, password) {
		c.o.Logger.Warn("console: sign-in failed", "source", src)
		c.auditEvent("console-login-failed", "", "", fmt.Sprintf("name=%q source=%s", name, src))
		c.render(w, http.StatusUnauthorized, "login.html", page{Title: "Sign in", Error: "Wrong name or password."})
		return
	}
	secret, _, err := c.sessions.create(name, now)
	if err != nil {
		c.refuse(w, r, http.StatusInternalServerError, "Internal error.")
		return
	}
	c.setCookie(w, secret, int(c.o.Session.Seconds()))
	c.auditEvent("console-login", name, "", "source="+src)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) checkLogin(name, password string) bool {
	as, err := LoadAccounts(c.o.AdminsFile)
	if err != nil {
		c.o.Logger.Error("console: admin accounts", "err", err)
	}
	hash, found := dummyHash(), false
	if i := slices.IndexFunc(as, func(a Account) bool { return a.Name == name }); i >= 0 {
		hash, found = as[i].Hash, true
	}
	c.hashing <- struct{}{}
	ok := checkPassword(hash, password)
	<-c.hashing
	return ok && found
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, se session) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.end(ck.Value)
	}
	c.setCookie(w, "", -1)
	c.auditEvent("console-logout", se.admin, "", "")
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// --- the network tree ---

type hostView struct {
	authority.Host
	Joined string
	Warn   string
}

type cidrView struct {
	Name     string
	Prefix   netip.Prefix
	Hosts    []hostView
	Children []cidrView
}

func (c *Console) tree(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Network", "tree")
	inv, err := c.a.Inventory()
	if err != nil {
		c.failed(w, "tree.html", p, err)
		return
	}
	t, err := authority.NewTree(inv.CIDRs)
	if err != nil {
		c.failed(w, "tree.html", p, err)
		return
	}
	warn := map[string]string{}
	for _, x := range c.warningList(inv.Hosts) {
		if x.Host != "" && warn[x.Host] == "" {
			warn[x.Host] = x.Text
		}
	}
	byCIDR := map[string][]hostView{}
	for _, h := range inv.Hosts {
		byCIDR[h.CIDR] = append(byCIDR[h.CIDR], hostView{Host: h, Joined: joined(h), Warn: warn[h.Name]})
	}
	var build func(name string) cidrView
	build = func(name string) cidrView {
		cd, _ := t.Get(name)
		v := cidrView{Name: name, Prefix: cd.Prefix, Hosts: byCIDR[name]}
		for _, ch := range t.Children(name) {
			v.Children = append(v.Children, build(ch))
		}
		return v
	}
	var roots []cidrView
	for _, n := range t.Roots() {
		roots = append(roots, build(n))
	}
	p.Data = roots
	c.render(w, http.StatusOK, "tree.html", p)
}

func joined(h authority.Host) string {
	if h.Kind == authority.KindDevice {
		return "Nebula app (signed from its public key)"
	}
	if h.State == authority.HostInvited {
		return "invited (token not used yet)"
	}
	return "enrollment token"
}

// --- invite ---

type inviteView struct {
	CIDRs  []string
	Name   string
	CIDR   string
	IP     string
	Groups string
	TTL    string
	// After a successful invite:
	Token   string
	QR      template.URL
	Command string
	ID      authority.Identity
	Expires time.Time
}

var inviteTTLs = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "168h": 7 * 24 * time.Hour}

func (c *Console) cidrNames() []string {
	inv, err := c.a.Inventory()
	if err != nil {
		return nil
	}
	var ns []string
	for _, cd := range inv.CIDRs {
		ns = append(ns, cd.Name)
	}
	slices.Sort(ns)
	return ns
}

func splitGroups(s string) []string {
	var gs []string
	for _, g := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(gs, g) {
			gs = append(gs, g)
		}
	}
	return gs
}

func (c *Console) inviteForm(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Invite a host", "invite")
	p.Data = inviteView{CIDRs: c.cidrNames(), TTL: "24h"}
	c.render(w, http.StatusOK, "invite.html", p)
}

func (c *Console) invite(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Invite a host", "invite")
	v := inviteView{CIDRs: c.cidrNames(), Name: strings.TrimSpace(r.PostFormValue("name")), CIDR: r.PostFormValue("cidr"),
		IP: strings.TrimSpace(r.PostFormValue("ip")), Groups: r.PostFormValue("groups"), TTL: r.PostFormValue("ttl")}
	p.Data = v
	req := authority.InviteRequest{Name: v.Name, CIDR: v.CIDR, Groups: splitGroups(v.Groups)}
	ttl, ok := inviteTTLs[v.TTL]
	if !ok {
		c.failed(w, "invite.html", p, fmt.Errorf("%w: token lifetime %q", authority.ErrMalformed, v.TTL))
		return
	}
	req.TTL = ttl
	if v.IP != "" {
		ip, err := netip.ParseAddr(v.IP)
		if err != nil {
			c.failed(w, "invite.html", p, fmt.Errorf("%w: address %q: leave it empty for the next free one", authority.ErrMalformed, v.IP))
			return
		}
		req.IP = ip
	}
	tok, id, err := c.a.InviteAs(req, se.admin)
	if err != nil {
		c.failed(w, "invite.html", p, err)
		return
	}
	qr, err := qrDataURI(tok)
	if err != nil {
		c.failed(w, "invite.html", p, err)
		return
	}
	v.Token, v.QR, v.ID, v.Expires = tok, qr, id, c.o.Now().Add(ttl)
	v.Command = "meshnode enroll -token '" + tok + "' -config /etc/meshnode/node.yml"
	p.Data = v
	c.render(w, http.StatusOK, "invite.html", p)
}

// --- revoke ---

func (c *Console) findHost(name string) (authority.Host, bool) {
	hs, err := c.a.Hosts()
	if err != nil {
		return authority.Host{}, false
	}
	i := slices.IndexFunc(hs, func(h authority.Host) bool { return h.Name == name })
	if i < 0 {
		return authority.Host{}, false
	}
	return hs[i], true
}

type revokeView struct {
	Host   authority.Host
	Result *authority.RevokeResult
}

func (c *Console) revokeConfirm(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Revoke a host", "tree")
	h, ok := c.findHost(r.URL.Query().Get("host"))
	if !ok {
		c.failed(w, "revoke.html", p, fmt.Errorf("%w: host %q", authority.ErrNotFound, r.URL.Query().Get("host")))
		return
	}
	p.Data = revokeView{Host: h}
	c.render(w, http.StatusOK, "revoke.html", p)
}

func (c *Console) revoke(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Revoke a host", "tree")
	name := r.PostFormValue("host")
	h, ok := c.findHost(name)
	if !ok {
		c.failed(w, "revoke.html", p, fmt.Errorf("%w: host %q", authority.ErrNotFound, name))
		return
	}
	p.Data = revokeView{Host: h}
	res, err := c.a.RevokeAs(name, se.admin)
	if err != nil {
		c.failed(w, "revoke.html", p, err)
		return
	}
	h, _ = c.findHost(name)
	p.Data = revokeView{Host: h, Result: &res}
	c.render(w, http.StatusOK, "revoke.html", p)
}

// --- audit ---

type auditView struct {
	Host, Admin, Action string
	Actions             []string
	Entries             []authority.AuditEntry
	More                int
}

const auditPage = 500

func (c *Console) audit(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Audit log", "audit")
	q := r.URL.Query()
	v := auditView{Host: q.Get("host"), Admin: q.Get("admin"), Action: q.Get("action")}
	es, err := c.a.Audit()
	if err != nil {
		c.failed(w, "audit.html", p, err)
		return
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if !slices.Contains(v.Actions, e.Action) {
			v.Actions = append(v.Actions, e.Action)
		}
		if (v.Host != "" && e.Host != v.Host) || (v.Admin != "" && e.Admin != v.Admin) || (v.Action != "" && e.Action != v.Action) {
			continue
		}
		if len(v.Entries) == auditPage {
			v.More++
			continue
		}
		v.Entries = append(v.Entries, e)
	}
	slices.Sort(v.Actions)
	p.Data = v
	c.render(w, http.StatusOK, "audit.html", p)
}

// --- status ---

type statusView struct {
	CAs              []authority.CAInfo
	Rotation         string
	BlocklistVersion uint64
	BlocklistEntries int
	BlocklistError   string
	Warnings         []string
	CertDuration     time.Duration
	DeviceCert       time.Duration
}

// rotationStep names where a CA rotation stands (authority.Options.CAs describes the steps).
func rotationStep(cas []authority.CAInfo) string {
	var live []authority.CAInfo
	for _, ca := range cas {
		if !ca.Expired {
			live = append(live, ca)
		}
	}
	if len(live) <= 1 {
		return "No rotation under way: one CA signs and is trusted."
	}
	for _, ca := range live {
		if !ca.HasKey {
			return fmt.Sprintf("Step 1 of 3: CA %s is trusted by hosts as they renew, but does not sign yet. Next: give it its key and put it first.", ca.Name)
		}
	}
	var old []string
	active := ""
	for _, ca := range live {
		if ca.Signs {
			active = ca.Name
		} else {
			old = append(old, ca.Name)
		}
	}
	return fmt.Sprintf("Step 2 of 3: CA %s signs; %s stays trusted until every host has renewed. Next: remove the old CA.", active, strings.Join(old, ", "))
}

func (c *Console) status(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "CA and blocklist", "status")
	v := statusView{CAs: c.a.CAs(), Warnings: c.a.Warnings(), CertDuration: c.a.CertDuration(), DeviceCert: c.o.DeviceCert}
	v.Rotation = rotationStep(v.CAs)
	var err error
	if v.BlocklistVersion, err = c.a.BlocklistVersion(); err != nil {
		c.failed(w, "status.html", p, err)
		return
	}
	if bl, err := c.a.Blocklist(); err != nil {
		v.BlocklistError = err.Error()
	} else {
		v.BlocklistEntries = len(bl.Fingerprints)
	}
	p.Data = v
	c.render(w, http.StatusOK, "status.html", p)
}

// --- warnings ---

type warning struct {
	Host string
	Kind string // expiring, expired, not-renewed, reimport, ca
	Text string
}

func (c *Console) warningList(hosts []authority.Host) []warning {
	now := c.o.Now()
	life := c.a.CertDuration()
	var ws []warning
	for _, w := range c.a.Warnings() {
		ws = append(ws, warning{Kind: "ca", Text: w})
	}
	for _, h := range hosts {
		if h.State != authority.HostEnrolled || h.NotAfter.IsZero() {
			continue
		}
		left := h.NotAfter.Sub(now)
		day := func(t time.Time) string { return t.UTC().Format("2006-01-02") }
		switch {
		case h.Kind == authority.KindDevice && left <= 0:
			ws = append(ws, warning{h.Name, "expired", fmt.Sprintf("%s (Nebula app): its certificate expired on %s. Re-issue it and import it on the device again.", h.Name, day(h.NotAfter))})
		case h.Kind == authority.KindDevice && left < c.o.DeviceReminder:
			ws = append(ws, warning{h.Name, "reimport", fmt.Sprintf("%s (Nebula app): its certificate ends on %s. Re-issue it and import it on the device again before then.", h.Name, day(h.NotAfter))})
		case h.Kind == authority.KindDevice:
		case left <= 0:
			ws = append(ws, warning{h.Name, "expired", fmt.Sprintf("%s: its certificate expired on %s and it has not renewed. Check that it can reach the CA service, or invite it again.", h.Name, day(h.NotAfter))})
		case left < min(c.o.ExpiryWarning, life/3):
			// Hosts renew at 2/3 of the lifetime: a third left means the renewal is late.
			ws = append(ws, warning{h.Name, "expiring", fmt.Sprintf("%s: its certificate ends on %s.", h.Name, day(h.NotAfter))})
		default:
			// Hosts renew at 2/3 of the lifetime; a twelfth more without one means it cannot.
			last := h.Enrolled
			if h.LastRenewal.After(last) {
				last = h.LastRenewal
			}
			if now.Sub(last) > life*2/3+life/12 {
				ws = append(ws, warning{h.Name, "not-renewed", fmt.Sprintf("%s: has not renewed since %s (due at two thirds of its certificate's life).", h.Name, day(last))})
			}
		}
	}
	return ws
}

func (c *Console) warnings(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Warnings", "warnings")
	hs, err := c.a.Hosts()
	if err != nil {
		c.failed(w, "warnings.html", p, err)
		return
	}
	p.Data = c.warningList(hs)
	c.render(w, http.StatusOK, "warnings.html", p)
}

var errNoKey = errors.New("paste the device's public key (NEBULA X25519 PUBLIC KEY) or choose its device.pub file")
