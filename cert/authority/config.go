package authority

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/cert"
)

// Config is ca.yml, the CA service's configuration (testdata/ca.yml documents every key).
// Relative paths are relative to the file's directory.
type Config struct {
	Listen string `yaml:"listen"`
	// URL is what tokens tell nodes to dial; default https://<listen>.
	URL string `yaml:"url"`
	// URLs, instead of URL, name every replica (or one name resolving to all of them):
	// tokens carry them all and nodes fail over between them. URL is then their list,
	// comma-separated.
	URLs []string `yaml:"urls"`
	// TLSHosts are extra DNS names for the self-signed TLS certificate (informational:
	// clients check the pin, not names).
	TLSHosts []string `yaml:"tls_hosts"`
	// StateDir holds the TLS identity (tls.pem), the renewal key (service.key) and, by
	// default, the store (ca.db) and the admin socket (admin.sock).
	StateDir string `yaml:"state_dir"`
	// MetricsListen, if set, serves Prometheus metrics over plain HTTP at /metrics.
	MetricsListen string              `yaml:"metrics_listen"`
	Store         StoreConfig         `yaml:"store"`
	AdminSocket   string              `yaml:"admin_socket"`
	CA            []CAConfig          `yaml:"ca"`
	Lighthouses   []LighthouseConfig  `yaml:"lighthouses"`
	CIDRs         map[string]CIDRNode `yaml:"cidrs"`
	Durations     DurationsConfig     `yaml:"durations"`
	Renewal       RenewalConfig       `yaml:"renewal"`
	Enroll        EnrollConfig        `yaml:"enroll"`
	Console       ConsoleConfig       `yaml:"console"`

	dir string
}

// CAConfig is one CA; the first with a key signs, the others are trusted during rotation.
type CAConfig struct {
	Crt string `yaml:"crt"`
	Key string `yaml:"key"`
}

// LighthouseConfig is one lighthouse handed to enrolling nodes.
type LighthouseConfig struct {
	VpnIP string   `yaml:"vpn_ip"`
	Addrs []string `yaml:"addrs"`
}

// CIDRNode is a named CIDR with its children.
type CIDRNode struct {
	CIDR string `yaml:"cidr"` // IPv4 or IPv6
	// CIDR6 is the IPv6 network of a dual-stack CIDR (whose cidr is then IPv4).
	CIDR6    string              `yaml:"cidr6"`
	Children map[string]CIDRNode `yaml:"children"`
}

// DurationsConfig are default lifetimes.
type DurationsConfig struct {
	Cert            time.Duration `yaml:"cert"`
	Token           time.Duration `yaml:"token"`
	CAExpiryWarning time.Duration `yaml:"ca_expiry_warning"`
}

// RenewalConfig tunes renewal checks.
type RenewalConfig struct {
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// EnrollConfig limits enrollment per source address.
type EnrollConfig struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// ConsoleConfig is the web console (package console). It is off unless Listen is set.
type ConsoleConfig struct {
	// Listen is host:port of the console's HTTPS listener ("" = no console). It serves with
	// the service's TLS identity; 127.0.0.1 keeps it on the machine (reach it over SSH).
	Listen string `yaml:"listen"`
	// Admins is the file of console accounts `mesh-cert admin add` writes (default
	// <state_dir>/admins.json).
	Admins string `yaml:"admins"`
	// Session is how long a sign-in lasts (default 8h); IdleTimeout ends it earlier when
	// unused (default 30m).
	Session     time.Duration `yaml:"session"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// DeviceCert is the lifetime of certificates for Nebula's apps (default 8760h, a year):
	// nothing renews them. DeviceReminder is how long before their end the console warns
	// (default 720h); ExpiryWarning the same for token-enrolled hosts (default 72h).
	DeviceCert     time.Duration `yaml:"device_cert"`
	DeviceReminder time.Duration `yaml:"device_reminder"`
	ExpiryWarning  time.Duration `yaml:"expiry_warning"`
}

// LoadConfig reads and checks ca.yml, reporting every problem with its key.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	if c.StateDir == "" {
		c.StateDir = "."
	}
	c.StateDir = c.path(c.StateDir)
	if c.AdminSocket == "" {
		c.AdminSocket = filepath.Join(c.StateDir, "admin.sock")
	}
	c.AdminSocket = c.path(c.AdminSocket)
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	c.Store.check(&c, bad)
	if c.Listen == "" {
		c.Listen = "0.0.0.0:8443"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen", "%v", err)
		}
	}
	switch {
	case len(c.URLs) > 0 && c.URL != "":
		bad("urls", "set url or urls, not both")
	case len(c.URLs) > 0:
		for i, u := range c.URLs {
			if err := checkServiceURLs(u); err != nil || strings.Contains(u, ",") {
				bad(fmt.Sprintf("urls[%d]", i), "want https://host:port, got %q", u)
			}
		}
		c.URL = strings.Join(c.URLs, ",")
	case c.URL == "":
		c.URL = "https://" + c.Listen
	}
	if u, err := url.Parse(c.URL); len(c.URLs) == 0 && (err != nil || u.Scheme != "https" || u.Host == "") {
		bad("url", "want https://host:port, got %q", c.URL)
	}
	if len(c.CA) == 0 {
		bad("ca", "at least one CA (crt and key) is required")
	}
	for i := range c.CA {
		if c.CA[i].Crt == "" {
			bad(fmt.Sprintf("ca[%d].crt", i), "required")
		}
		c.CA[i].Crt = c.path(c.CA[i].Crt)
		if c.CA[i].Key != "" {
			c.CA[i].Key = c.path(c.CA[i].Key)
		}
	}
	for i, l := range c.Lighthouses {
		if a, err := netip.ParseAddr(l.VpnIP); err != nil {
			bad(fmt.Sprintf("lighthouses[%d].vpn_ip", i), "%v", err)
		} else if !a.Unmap().Is4() {
			bad(fmt.Sprintf("lighthouses[%d].vpn_ip", i), "%v is not an IPv4 address", a)
		}
		for j, a := range l.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad(fmt.Sprintf("lighthouses[%d].addrs[%d]", i, j), "%v", err)
			}
		}
	}
	if cs := c.cidrList(&errs); len(errs) == 0 {
		if _, err := NewTree(cs); err != nil {
			bad("cidrs", "%v", err)
		}
	}
	if c.Console.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Console.Listen); err != nil {
			bad("console.listen", "%v", err)
		}
	}
	if c.Console.Admins == "" {
		c.Console.Admins = filepath.Join(c.StateDir, "admins.json")
	}
	c.Console.Admins = c.path(c.Console.Admins)
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{
		{"console.session", &c.Console.Session, 8 * time.Hour},
		{"console.idle_timeout", &c.Console.IdleTimeout, 30 * time.Minute},
		{"console.device_cert", &c.Console.DeviceCert, DefaultDeviceCertDuration},
		{"console.device_reminder", &c.Console.DeviceReminder, 30 * 24 * time.Hour},
		{"console.expiry_warning", &c.Console.ExpiryWarning, 72 * time.Hour},
	} {
		switch {
		case *d.v < 0:
			bad(d.key, "must be positive, got %v", *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if c.Enroll.Rate == 0 {
		c.Enroll.Rate = 1
	}
	if c.Enroll.Burst == 0 {
		c.Enroll.Burst = 5
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config %s: %w", path, errors.Join(errs...))
	}
	return &c, nil
}

func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// cidrList flattens the tree; a child's prefixes must lie inside its parent's of their
// family, so the nesting written in the file agrees with the tree containment builds.
func (c *Config) cidrList(errs *[]error) []CIDR {
	var out []CIDR
	bad := func(format string, args ...any) {
		if errs != nil {
			*errs = append(*errs, fmt.Errorf(format, args...))
		}
	}
	var walk func(key string, parent CIDR, nodes map[string]CIDRNode)
	walk = func(key string, parent CIDR, nodes map[string]CIDRNode) {
		for _, name := range slices.Sorted(mapsKeys(nodes)) {
			n := nodes[name]
			k := key + "." + name
			p, err := netip.ParsePrefix(n.CIDR)
			if err != nil {
				bad("%s.cidr: %w", k, err)
				continue
			}
			cd := CIDR{Name: name, Prefix: p}
			if n.CIDR6 != "" {
				if cd.Prefix6, err = netip.ParsePrefix(n.CIDR6); err != nil {
					bad("%s.cidr6: %w", k, err)
					continue
				}
			}
			if parent.Prefix.IsValid() {
				for _, q := range cd.Prefixes() {
					pp, ok := parent.prefixFor(q.Addr())
					if !ok || q.Bits() <= pp.Bits() || !pp.Contains(q.Addr()) {
						field := ".cidr"
						if q == cd.Prefix6 {
							field = ".cidr6"
						}
						bad("%s%s: %v is not inside its parent %v", k, field, q, parent)
					}
				}
			}
			out = append(out, cd)
			walk(k+".children", cd, n.Children)
		}
	}
	walk("cidrs", CIDR{}, c.CIDRs)
	return out
}

// ConfigCIDRs are the CIDRs the file defines.
func (c *Config) ConfigCIDRs() []CIDR { return c.cidrList(nil) }

// LoadCAs reads the CA certificates and keys the config names.
func (c *Config) LoadCAs() ([]SigningCA, error) {
	var cas []SigningCA
	for i, cc := range c.CA {
		b, err := os.ReadFile(cc.Crt)
		if err != nil {
			return nil, fmt.Errorf("ca[%d].crt: %w", i, err)
		}
		crt, _, err := cert.UnmarshalPEM(b)
		if err != nil {
			return nil, fmt.Errorf("ca[%d].crt %s: %w", i, cc.Crt, err)
		}
		s := SigningCA{Cert: crt}
		if cc.Key != "" {
			kb, err := os.ReadFile(cc.Key)
			if err != nil {
				return nil, fmt.Errorf("ca[%d].key: %w", i, err)
			}
			if s.Key, _, err = cert.UnmarshalEd25519PrivateKey(kb); err != nil {
				return nil, fmt.Errorf("ca[%d].key %s: %w", i, cc.Key, err)
			}
		}
		cas = append(cas, s)
	}
	return cas, nil
}

// LighthouseList is the lighthouses in Authority form.
func (c *Config) LighthouseList() []Lighthouse {
	var out []Lighthouse
	for _, l := range c.Lighthouses {
		// ::ffff:10.42.0.1 is 10.42.0.1: hosts' addresses are plain IPv4, and a mapped form
		// would compare unequal to them (and be handed out again).
		out = append(out, Lighthouse{VpnIP: netip.MustParseAddr(l.VpnIP).Unmap(), Addrs: slices.Clone(l.Addrs)})
	}
	return out
}

// Service is everything a running CA service (or an admin command on a stopped one) needs.
type Service struct {
	Config    *Config
	Authority *Authority
	Store     Store
	TLS       TLSIdentity
}

// Close closes the store.
func (s *Service) Close() error { return s.Store.Close() }

// OpenOptions adjust Config.OpenWith.
type OpenOptions struct {
	Now    func() time.Time
	Logger *slog.Logger
	// StoreWait bounds the wait for another process to release a bbolt file (ErrStoreLocked).
	StoreWait time.Duration
	// Postgres opens a store of type postgres; migrate lets it create or upgrade the schema.
	// mesh-cert passes pgstore's opener (this package does not import its stores' drivers).
	Postgres func(dsn string, migrate bool) (Store, error)
	// Migrate: the running service creates and upgrades the database schema; admin
	// commands do not, so an old binary on an admin machine cannot upgrade it by accident.
	Migrate bool
}

// IdentityBinder is a store several replicas share. BindIdentity records the service's
// public identity (TLS pin and renewal public key) the first time and refuses another one
// later: a replica with other key files would hand out tokens no node can use, and sign
// renewal proofs nodes cannot check. The private keys never go into the store.
type IdentityBinder interface {
	BindIdentity(tlsPin, servicePublicKey string) error
}

// Open is OpenWith for a bbolt store.
func (c *Config) Open(now func() time.Time, logger *slog.Logger, storeWait time.Duration) (*Service, error) {
	return c.OpenWith(OpenOptions{Now: now, Logger: logger, StoreWait: storeWait, Migrate: true})
}

// OpenStore opens the store the config names.
func (c *Config) OpenStore(o OpenOptions) (Store, error) {
	switch c.Store.Type {
	case StorePostgres:
		if o.Postgres == nil {
			return nil, errors.New("store: type postgres is not supported by this program")
		}
		dsn, err := c.Store.ConnString()
		if err != nil {
			return nil, err
		}
		return o.Postgres(dsn, o.Migrate)
	default:
		return OpenBolt(c.Store.Path, o.StoreWait)
	}
}

// OpenWith loads the CAs, creates the TLS identity and renewal key on first start, opens
// the store (failing with ErrStoreLocked within o.StoreWait if a running service holds a
// bbolt file), checks a shared store's recorded identity, and adds the config's CIDRs to
// the inventory.
func (c *Config) OpenWith(o OpenOptions) (*Service, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	logger := o.Logger
	cas, err := c.LoadCAs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	hosts := slices.Clone(c.TLSHosts)
	for _, s := range strings.Split(c.URL, ",") {
		if u, err := url.Parse(s); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	hosts = slices.DeleteFunc(hosts, func(h string) bool { return net.ParseIP(h) != nil || strings.TrimSpace(h) == "" })
	id, err := LoadOrCreateTLSIdentity(filepath.Join(c.StateDir, "tls.pem"), hosts, now())
	if err != nil {
		return nil, err
	}
	sk, err := LoadOrCreateServiceKey(filepath.Join(c.StateDir, "service.key"))
	if err != nil {
		return nil, err
	}
	st, err := c.OpenStore(o)
	if err != nil {
		return nil, err
	}
	if b, ok := st.(IdentityBinder); ok {
		if err := b.BindIdentity(id.PinString(), hex.EncodeToString(ecdhPublic(sk))); err != nil {
			st.Close()
			return nil, fmt.Errorf("%w: every replica (and admin machine) needs the same tls.pem and service.key: copy them from %s of the first replica into %s",
				err, "state_dir", c.StateDir)
		}
	}
	a, err := New(Options{
		Store: st, CAs: cas, ServiceKey: sk, Lighthouses: c.LighthouseList(), URL: c.URL, Pin: id.Pin,
		CertDuration: c.Durations.Cert, TokenTTL: c.Durations.Token, CAExpiryWarning: c.Durations.CAExpiryWarning,
		MaxClockSkew: c.Renewal.MaxClockSkew, Logger: logger, Now: now,
	})
	if err == nil {
		err = a.SyncCIDRs(c.ConfigCIDRs())
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Service{Config: c, Authority: a, Store: st, TLS: id}, nil
}

func ecdhPublic(priv []byte) []byte {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil // New reports the bad key
	}
	return k.PublicKey().Bytes()
}
