package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
)

// Options configure a Console. Authority and AdminsFile are required.
type Options struct {
	Authority *authority.Authority
	// TLS is the service's identity; Serve uses it, Handler does not need it.
	TLS authority.TLSIdentity
	// AdminsFile is the accounts file (AddAccount); it is read at every sign-in and request,
	// so an account added or removed with the CLI counts at once.
	AdminsFile string
	// Session bounds a sign-in (default 8h); IdleTimeout ends one unused (default 30m).
	Session     time.Duration
	IdleTimeout time.Duration
	// DeviceCert is the lifetime of device certificates (default a year), DeviceReminder how
	// long before their end they are listed (default 30 days), ExpiryWarning the same for
	// token-enrolled hosts (default 72h).
	DeviceCert     time.Duration
	DeviceReminder time.Duration
	ExpiryWarning  time.Duration
	// LoginBurst attempts per source address and per account, then one per LoginEvery
	// (defaults 5 and 12s).
	LoginBurst int
	LoginEvery time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	Rand       io.Reader
}

// Console serves the web console.
type Console struct {
	o        Options
	a        *authority.Authority
	sessions *sessions
	logins   *limiter
	hashing  chan struct{} // at most this many argon2id computations at once
	pages    map[string]*template.Template
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

const cookieName = "__Host-meshca" // __Host-: Secure, Path=/, no Domain, enforced by browsers

// New returns a Console.
func New(o Options) (*Console, error) {
	if o.Authority == nil || o.AdminsFile == "" {
		return nil, errors.New("console: Authority and AdminsFile are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Session, 8*time.Hour)
	def(&o.IdleTimeout, 30*time.Minute)
	def(&o.DeviceCert, authority.DefaultDeviceCertDuration)
	def(&o.DeviceReminder, 30*24*time.Hour)
	def(&o.ExpiryWarning, 72*time.Hour)
	def(&o.LoginEvery, 12*time.Second)
	if o.LoginBurst <= 0 {
		o.LoginBurst = 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	c := &Console{o: o, a: o.Authority,
		sessions: &sessions{m: map[string]*session{}, ttl: o.Session, idle: o.IdleTimeout, rand: o.Rand},
		logins:   newLimiter(o.LoginBurst, o.LoginEvery),
		hashing:  make(chan struct{}, 2),
		pages:    map[string]*template.Template{},
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if n == "templates/layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		c.pages[n[len("templates/"):]] = t
	}
	return c, nil
}

// Handler is the console without TLS (tests; Serve wraps it in TLS).
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.Handle("POST /logout", c.admin(c.logout))
	mux.Handle("GET /{$}", c.admin(c.tree))
	mux.Handle("GET /invite", c.admin(c.inviteForm))
	mux.Handle("POST /invite", c.admin(c.invite))
	mux.Handle("GET /revoke", c.admin(c.revokeConfirm))
	mux.Handle("POST /revoke", c.admin(c.revoke))
	mux.Handle("GET /audit", c.admin(c.audit))
	mux.Handle("GET /status", c.admin(c.status))
	mux.Handle("GET /warnings", c.admin(c.warnings))
	mux.Handle("GET /devices/new", c.admin(c.deviceForm))
	mux.Handle("POST /devices/new", c.admin(c.deviceAdd))
	mux.Handle("GET /devices/show", c.admin(c.deviceShow))
	mux.Handle("GET /devices/site.yml", c.admin(c.deviceSite))
	mux.Handle("POST /devices/reissue", c.admin(c.deviceReissue))
	return securityHeaders(mux)
}

// securityHeaders: no framing, no inline script or style, no caching of pages with tokens.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
		// forms, and sameOrigin must see the real origin.
		hd.Set("Referrer-Policy", "same-origin")
		// No HSTS: the certificate is self-signed, and HSTS on localhost would outlive us.
		if r.URL.Path == "/" || len(r.URL.Path) < 8 || r.URL.Path[:8] != "/static/" {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// TLSConfig serves the service's pinned certificate.
func (c *Console) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{c.o.TLS.Cert}}
}

// Serve serves the console over HTTPS on ln until ctx is done.
func (c *Console) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(c.o.Logger.Handler(), slog.LevelDebug),
	}
	err := authority.ServeTLS(ctx, ln, hs, c.TLSConfig(), nil)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

type ctxKey struct{}

// admin wraps a handler that needs a signed-in admin: a GET without one goes to the
// sign-in page, anything else is refused; every POST must carry the session's CSRF token.
func (c *Console) admin(h func(http.ResponseWriter, *http.Request, session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := c.o.Now()
		var secret string
		if ck, err := r.Cookie(cookieName); err == nil {
			secret = ck.Value
		}
		se, ok := c.sessions.get(secret, now)
		if ok && !c.accountExists(se.admin) {
			c.sessions.endAdmin(se.admin)
			ok = false
		}
		if !ok {
			if r.Method == http.MethodGet {
				to := "/login"
				if secret != "" {
					to += "?expired=1"
				}
				http.Redirect(w, r, to, http.StatusSeeOther)
				return
			}
			c.refuse(w, r, http.StatusForbidden, "Not signed in, or the session has ended: sign in again.")
			return
		}
		if r.Method != http.MethodGet {
			if !sameOrigin(r) {
				c.refuse(w, r, http.StatusForbidden, "Refused: the request came from another site.")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			got := r.PostFormValue("csrf")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(se.csrf)) != 1 {
				c.o.Logger.Warn("console: request without a valid CSRF token refused", "admin", se.admin, "path", r.URL.Path)
				c.refuse(w, r, http.StatusForbidden, "Refused: the form was stale or not ours (missing security token). Reload the page and try again.")
				return
			}
		}
		h(w, r, se)
	})
}

func (c *Console) accountExists(name string) bool {
	as, err := LoadAccounts(c.o.AdminsFile)
	if err != nil {
		c.o.Logger.Error("console: admin accounts", "err", err)
		return false
	}
	return slices.ContainsFunc(as, func(a Account) bool { return a.Name == name })
}

// sameOrigin refuses what a browser marks as sent from another site. Browsers send Origin
// with every POST; its absence (curl, tests) leaves the CSRF token as the check.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return false
	}
	return true
}

func sourceAddr(r *http.Request) string {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().String()
	}
	return r.RemoteAddr
}

func (c *Console) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}
