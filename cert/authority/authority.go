package authority

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// Defaults for Options fields left zero.
const (
	DefaultCertDuration    = 30 * 24 * time.Hour
	DefaultTokenTTL        = 24 * time.Hour
	DefaultCAExpiryWarning = 30 * 24 * time.Hour
	DefaultMaxClockSkew    = 5 * time.Minute
	// maxBackdate makes a fresh cert valid on peers whose clocks lag a little (step-ca: 1
	// min). It is taken out of the lifetime, not added to it, and is at most a tenth of it.
	maxBackdate = time.Minute
)

// SigningCA is a CA the authority knows. Key is nil for a CA that is only trusted (kept in
// the bundle during a rotation) and never signs.
type SigningCA struct {
	Cert *cert.Certificate
	Key  ed25519.PrivateKey
}

// Options configure an Authority. Store, CAs and ServiceKey are required.
type Options struct {
	Store Store
	// CAs in order of preference: the first unexpired one with a key signs (the active
	// CA); every unexpired one goes into the bundle nodes trust. Rotating takes three
	// steps, each followed by a round of renewals: the new CA added without a key (trusted
	// everywhere before it signs), then first with its key, then the old one dropped.
	CAs []SigningCA
	// ServiceKey is the service's X25519 private key; nodes prove possession of their key
	// by a MAC keyed with X25519(node key, service public key).
	ServiceKey  []byte
	Lighthouses []Lighthouse
	// URL and Pin (SHA-256 of the TLS certificate) go into tokens.
	URL string
	Pin []byte

	// CertDuration is a host certificate's whole validity, NotAfter − NotBefore, backdating
	// included (see backdateFor), so renewal at 2/3 of it comes 2/3 of it after NotBefore.
	// A cert never outlives its CA, so near the CA's end it is shorter.
	CertDuration    time.Duration
	TokenTTL        time.Duration // default invite lifetime
	CAExpiryWarning time.Duration // warn when the active CA expires sooner than this
	MaxClockSkew    time.Duration // allowed distance of a renewal request's time

	Logger *slog.Logger
	Now    func() time.Time
	Rand   io.Reader
}

// Authority is the CA service's domain logic. It is safe for concurrent use: all state is
// in the store and every operation is one store transaction.
type Authority struct {
	o          Options
	active     SigningCA
	pool       *cert.Pool
	serviceKey *ecdh.PrivateKey
	blChanged  *changeSignal // see watch.go

	alarmMu sync.Mutex
	alarmed uint64 // blocklist version whose alarm this process has audited
}

// New checks opts and returns an Authority.
func New(opts Options) (*Authority, error) {
	if opts.Store == nil {
		return nil, errors.New("authority: no store")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CertDuration <= 0 {
		opts.CertDuration = DefaultCertDuration
	}
	if opts.CertDuration < time.Second {
		return nil, fmt.Errorf("authority: certificate lifetime %v: at least 1s (certs keep whole seconds)", opts.CertDuration)
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.CAExpiryWarning <= 0 {
		opts.CAExpiryWarning = DefaultCAExpiryWarning
	}
	if opts.MaxClockSkew <= 0 {
		opts.MaxClockSkew = DefaultMaxClockSkew
	}
	sk, err := ecdh.X25519().NewPrivateKey(opts.ServiceKey)
	if err != nil {
		return nil, fmt.Errorf("authority: service key: %w", err)
	}
	a := &Authority{o: opts, serviceKey: sk, pool: cert.NewPoolWithClock(opts.Now)}
	a.blChanged = &changeSignal{}
	a.o.Store = signallingStore{Store: opts.Store, sig: a.blChanged}
	if w, ok := opts.Store.(BlocklistWatcher); ok {
		// Another replica's (or an admin command's) revocation wakes our long-polls too.
		w.WatchBlocklist(a.blChanged.signal)
	}
	now := opts.Now()
	for i, ca := range opts.CAs {
		if ca.Cert == nil {
			return nil, fmt.Errorf("authority: CA %d has no certificate", i)
		}
		if err := a.pool.AddCA(ca.Cert); err != nil {
			return nil, fmt.Errorf("authority: CA %s: %w", ca.Cert.Details.Name, err)
		}
		if ca.Key != nil {
			if err := ca.Cert.VerifyPrivateKey(ca.Key); err != nil {
				return nil, fmt.Errorf("authority: CA %s: %w", ca.Cert.Details.Name, err)
			}
			if a.active.Cert == nil && !ca.Cert.Expired(now) {
				a.active = ca
			}
		}
	}
	if a.active.Cert == nil {
		return nil, ErrNoActiveCA
	}
	return a, nil
}

// ServicePublicKey is the X25519 public key nodes use for renewal proofs.
func (a *Authority) ServicePublicKey() []byte { return a.serviceKey.PublicKey().Bytes() }

// Pool is the set of CAs the authority trusts (renewals must chain to one of them).
func (a *Authority) Pool() *cert.Pool { return a.pool }

// ActiveCA is the CA that signs.
func (a *Authority) ActiveCA() *cert.Certificate { return a.active.Cert }

// Warnings lists problems an operator must act on, such as the active CA nearing expiry.
func (a *Authority) Warnings() []string {
	now := a.o.Now()
	var w []string
	na := a.active.Cert.Details.NotAfter
	if left := na.Sub(now); left < a.o.CAExpiryWarning {
		w = append(w, fmt.Sprintf("active CA %s (%s) expires in %v, at %s: add a new CA before it does",
			a.active.Cert.Details.Name, a.active.Cert.Fingerprint(), left.Truncate(time.Second), na.UTC().Format(time.RFC3339)))
	}
	w = append(w, a.pool.Warnings()...)
	return w
}

// Bundle is the PEM of every unexpired CA, what nodes should trust.
func (a *Authority) Bundle() []byte {
	var b bytes.Buffer
	now := a.o.Now()
	for _, c := range a.pool.CAs() {
		if c.Expired(now) {
			continue
		}
		p, err := c.MarshalPEM()
		if err == nil {
			b.Write(p)
		}
	}
	return b.Bytes()
}

// bundleID names what a renewal hands out: the signing CA and the unexpired CAs of the
// bundle. It changes with each step of a CA rotation.
func (a *Authority) bundleID(now time.Time) string {
	var fps []string
	for _, c := range a.pool.CAs() {
		if !c.Expired(now) {
			fps = append(fps, c.Fingerprint())
		}
	}
	slices.Sort(fps)
	h := sha256.Sum256([]byte(a.active.Cert.Fingerprint() + " " + strings.Join(fps, " ")))
	return hex.EncodeToString(h[:8])
}

// Identity is what a host's certificates say: chosen by the admin at invite, re-issued
// unchanged at every renewal.
type Identity struct {
	Name    string
	IP      netip.Prefix
	IP6     netip.Prefix // see Host.IP6
	Groups  []string
	CIDR    string
	Subnets []netip.Prefix // networks the host may route for (unsafe networks)
}

// InviteRequest names the identity to bind to a new token.
type InviteRequest struct {
	Name string
	CIDR string
	IP   netip.Addr // zero: the next free address of CIDR (in each of its networks)
	// IP6 is a second address, of the other family than IP, for a dual-stack CIDR. IP and
	// IP6 may each be IPv4 or IPv6: each goes to the CIDR's network of its family.
	IP6    netip.Addr
	Groups []string
	TTL    time.Duration // zero: Options.TokenTTL
	// Replace invites a name that has enrolled (or was revoked) again, for a new key: the
	// host keeps its IP, CIDR and groups unless given here, its audit history stays, and
	// every certificate it still holds that is valid is revoked.
	Replace bool
	// Subnets the host may route for (a gateway); nil on a replacing invite keeps them.
	Subnets []netip.Prefix
}

func (a *Authority) audit(tx Tx, e AuditEntry) error {
	e.Time = a.o.Now().UTC()
	if _, err := tx.AppendAudit(e); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// SyncCIDRs adds the CIDRs (from config) that the store does not have. A name already
// stored with another prefix is an error: moving a CIDR under its hosts is not supported.
func (a *Authority) SyncCIDRs(cs []CIDR) error {
	return a.o.Store.Update(func(tx Tx) error {
		for _, c := range cs {
			if err := addCIDR(tx, c, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddCIDR adds one named CIDR to the tree (adding one that exists with the same prefix
// changes nothing).
func (a *Authority) AddCIDR(c CIDR) error {
	return a.o.Store.Update(func(tx Tx) error {
		if old, ok, err := tx.CIDR(c.Name); err != nil || (ok && old.Prefix == c.Prefix && old.Prefix6 == c.Prefix6) {
			return err
		}
		if err := addCIDR(tx, c, false); err != nil {
			return err
		}
		return a.audit(tx, AuditEntry{Action: "cidr", Detail: c.Name + " " + c.String()})
	})
}

func addCIDR(tx Tx, c CIDR, same bool) error {
	old, ok, err := tx.CIDR(c.Name)
	if err != nil {
		return err
	}
	if ok {
		if same && old.Prefix == c.Prefix && old.Prefix6 == c.Prefix6 {
			return nil
		}
		return fmt.Errorf("%w: CIDR %s is already %v", ErrNameTaken, c.Name, old)
	}
	all, err := tx.CIDRs()
	if err != nil {
		return err
	}
	t, err := NewTree(append(all, c))
	if err != nil {
		return err
	}
	// A new CIDR must not swallow hosts its parent already gave out.
	hosts, err := tx.Hosts()
	if err != nil {
		return err
	}
	for _, h := range hosts {
		for _, ip := range h.Addrs() {
			if p, ok := c.prefixFor(ip.Addr()); ok && p.Contains(ip.Addr()) && t.CheckAddr(h.CIDR, ip.Addr()) != nil {
				return fmt.Errorf("%w: %s %v would take host %s (%v) from %s", ErrCIDRInvalid, c.Name, p, h.Name, ip.Addr(), h.CIDR)
			}
		}
	}
	return tx.PutCIDR(c)
}

// Tree returns the inventory's CIDR tree.
func (a *Authority) Tree() (*Tree, error) {
	var t *Tree
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		t, err = treeOf(tx)
		return err
	})
	return t, err
}

func treeOf(tx Tx) (*Tree, error) {
	cs, err := tx.CIDRs()
	if err != nil {
		return nil, err
	}
	return NewTree(cs)
}

// BlocklistVersion is the current blocklist version (0 before any revocation).
func (a *Authority) BlocklistVersion() (uint64, error) {
	var v uint64
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		v, err = tx.BlocklistVersion()
		return err
	})
	return v, err
}

// Hosts returns every host on record, sorted by IP.
func (a *Authority) Hosts() ([]Host, error) {
	var hs []Host
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		hs, err = tx.Hosts()
		return err
	})
	slices.SortFunc(hs, func(x, y Host) int { return x.IP.Addr().Compare(y.IP.Addr()) })
	return hs, err
}

// Inventory is the CIDRs and hosts on record.
type Inventory struct {
	CIDRs []CIDR `json:"cidrs"`
	Hosts []Host `json:"hosts"`
}

// Inventory returns the CIDRs and hosts (sorted by IP) in one consistent view.
func (a *Authority) Inventory() (Inventory, error) {
	var inv Inventory
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		if inv.CIDRs, err = tx.CIDRs(); err != nil {
			return err
		}
		inv.Hosts, err = tx.Hosts()
		return err
	})
	slices.SortFunc(inv.Hosts, func(x, y Host) int { return x.IP.Addr().Compare(y.IP.Addr()) })
	return inv, err
}

// Audit returns the audit log.
func (a *Authority) Audit() ([]AuditEntry, error) {
	var es []AuditEntry
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		es, err = tx.Audit()
		return err
	})
	return es, err
}

// takenSet is every address a suggestion must avoid: the hosts' and the lighthouses' (which
// may have been set up by hand, outside the inventory).
func (a *Authority) takenSet(hosts []Host) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(hosts)+len(a.o.Lighthouses))
	for _, h := range hosts {
		for _, ip := range h.Addrs() {
			m[ip.Addr()] = true
		}
	}
	for _, l := range a.o.Lighthouses {
		m[l.VpnIP.Unmap()] = true // addresses in the tree are plain IPv4
	}
	return m
}

// NextFreeIP suggests an address in CIDR name.
func (a *Authority) NextFreeIP(name string) (netip.Addr, error) {
	var ip netip.Addr
	err := a.o.Store.View(func(tx Tx) error {
		t, err := treeOf(tx)
		if err != nil {
			return err
		}
		hs, err := tx.Hosts()
		if err != nil {
			return err
		}
		taken := a.takenSet(hs)
		ip, err = t.NextFree(name, func(x netip.Addr) bool { return taken[x] })
		return err
	})
	return ip, err
}

// Invite records the identity req names and returns a single-use token for it. A name is
// unique; inviting a name again is allowed only while it has not enrolled, and makes the
// earlier token useless.
func (a *Authority) Invite(req InviteRequest) (string, Identity, error) {
	return a.invite(req, "")
}

// invite is Invite with the console admin who asked ("" for none) recorded in the audit log.
func (a *Authority) invite(req InviteRequest, admin string) (string, Identity, error) {
	if err := checkName("host", req.Name); err != nil {
		return "", Identity{}, err
	}
	for _, g := range req.Groups {
		if err := checkName("group", g); err != nil {
			return "", Identity{}, err
		}
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = a.o.TokenTTL
	}
	secret := make([]byte, secretSize)
	if _, err := io.ReadFull(a.o.Rand, secret); err != nil {
		return "", Identity{}, fmt.Errorf("token secret: %w", err)
	}
	hash := tokenHash(secret)
	now := a.o.Now()
	var id Identity
	given := req
	err := a.o.Store.Update(func(tx Tx) error {
		req := given // a store may run this more than once (pgstore retries)
		t, err := treeOf(tx)
		if err != nil {
			return err
		}
		hs, err := tx.Hosts()
		if err != nil {
			return err
		}
		var prev *Host
		if i := slices.IndexFunc(hs, func(h Host) bool { return h.Name == req.Name }); i >= 0 {
			switch {
			case hs[i].State == HostInvited:
			case req.Replace:
				prev = &hs[i]
				// The replaced host keeps what the request does not change.
				if req.CIDR == "" {
					req.CIDR = prev.CIDR
				}
				if !req.IP.IsValid() && !req.IP6.IsValid() && req.CIDR == prev.CIDR {
					req.IP, req.IP6 = prev.IP.Addr(), prev.IP6.Addr()
				}
				if req.Groups == nil {
					req.Groups = slices.Clone(prev.Groups)
				}
				if req.Subnets == nil {
					req.Subnets = slices.Clone(prev.Subnets)
				}
			case hs[i].State == HostRevoked:
				return fmt.Errorf("%w: host %s is revoked; only a replacing invite gives the name a new key", ErrNameTaken, req.Name)
			default:
				return fmt.Errorf("%w: host %s is %s; only a replacing invite gives it a new key", ErrNameTaken, req.Name, hs[i].State)
			}
			hs = slices.Delete(hs, i, i+1) // a re-invite may move the host
		} else if req.Replace {
			return fmt.Errorf("%w: host %s (nothing to replace)", ErrNotFound, req.Name)
		}
		if _, ok := t.Get(req.CIDR); !ok {
			return fmt.Errorf("%w: %s", ErrCIDRUnknown, req.CIDR)
		}
		taken := a.takenSet(hs)
		var given []netip.Addr
		for _, ip := range []netip.Addr{req.IP, req.IP6} {
			if !ip.IsValid() {
				continue
			}
			// A lighthouse's address may be chosen explicitly (to enroll that lighthouse).
			if hostHolds(hs, ip) {
				return fmt.Errorf("%w: %v", ErrIPTaken, ip)
			}
			given = append(given, ip)
		}
		ips, err := t.Addrs(req.CIDR, given, func(x netip.Addr) bool { return taken[x] })
		if err != nil {
			return err
		}
		id = Identity{Name: req.Name, IP: ips[0], Groups: slices.Clone(req.Groups), CIDR: req.CIDR}
		if len(ips) > 1 {
			id.IP6 = ips[1]
		}
		for _, s := range req.Subnets {
			// An unsafe network is outside the overlay: a route into it would shadow hosts.
			if !s.IsValid() || !s.Addr().Is4() || s.Overlaps(t.Root(req.CIDR).Prefix) {
				return fmt.Errorf("%w: subnet %v must be an IPv4 network outside the overlay %v", ErrMalformed, s, t.Root(req.CIDR).Prefix)
			}
			id.Subnets = append(id.Subnets, s.Masked())
		}
		if err := a.checkIssuable(id); err != nil {
			return err
		}
		if err := tx.PutHost(Host{Name: id.Name, IP: id.IP, IP6: id.IP6, Groups: id.Groups, Subnets: id.Subnets, CIDR: id.CIDR, State: HostInvited, TokenHash: hash}); err != nil {
			return err
		}
		if err := tx.PutToken(TokenRecord{Hash: hash, Host: id.Name, Created: now.UTC(), Expires: now.Add(ttl).UTC()}); err != nil {
			return err
		}
		action, revoked := "invite", ""
		if prev != nil {
			fps, v, err := a.revokeCerts(tx, id.Name, now.UTC())
			if err != nil {
				return err
			}
			action, revoked = "replace", fmt.Sprintf(" was=%s revoked=%d version=%d", prev.State, len(fps), v)
		}
		return a.audit(tx, AuditEntry{Action: action, Host: id.Name, Admin: admin,
			Detail: fmt.Sprintf("ip=%v%s groups=%v subnets=%v cidr=%s token=%s expires=%s%s", id.IP, ip6Detail(id.IP6), id.Groups, id.Subnets, id.CIDR, tokenID(hash), now.Add(ttl).UTC().Format(time.RFC3339), revoked)})
	})
	if err != nil {
		return "", Identity{}, err
	}
	a.o.Logger.Info("invited host", "host", id.Name, "ip", id.IP, "ip6", id.IP6, "token_id", tokenID(hash), "replace", req.Replace)
	return Token{URL: a.o.URL, Pin: a.o.Pin, Secret: secret}.String(), id, nil
}

// hostHolds reports whether one of hs has ip.
func hostHolds(hs []Host, ip netip.Addr) bool {
	return slices.ContainsFunc(hs, func(h Host) bool {
		return slices.ContainsFunc(h.Addrs(), func(p netip.Prefix) bool { return p.Addr() == ip })
	})
}

// ip6Detail is the audit text of a second address: none for a v4-only host, so its
// entries read as before.
func ip6Detail(ip6 netip.Prefix) string {
	if !ip6.IsValid() {
		return ""
	}
	return " ip6=" + ip6.String()
}

// hostCert is the unsigned certificate of h's addresses: v1, as always, unless one is IPv6,
// which only a v2 certificate can carry (Nebula 1.10+ reads it; 1.6 hosts cannot reach an
// IPv6 address anyway).
func hostCert(name string, addrs []netip.Prefix) *cert.Certificate {
	c := &cert.Certificate{Details: cert.Details{Name: name, Ips: slices.Clone(addrs)}}
	if slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		_ = c.SetVersion(cert.Version2) // a known version: cannot fail
	}
	return c
}

// checkIssuable fails early, at invite, for an identity the active CA's constraints forbid.
func (a *Authority) checkIssuable(id Identity) error {
	ca := a.active.Cert
	c := hostCert(id.Name, Host{IP: id.IP, IP6: id.IP6}.Addrs())
	c.Details.Groups, c.Details.Subnets = id.Groups, id.Subnets
	c.Details.NotBefore, c.Details.NotAfter = ca.Details.NotBefore, ca.Details.NotAfter
	if err := c.CheckConstraints(ca); err != nil {
		return fmt.Errorf("CA %s cannot sign %s: %w", ca.Details.Name, id.Name, err)
	}
	return nil
}

// issue signs a certificate for h's identity on record with publicKey and records it.
func (a *Authority) issue(tx Tx, h Host, publicKey []byte, now time.Time) (*cert.Certificate, []byte, error) {
	return a.issueFor(tx, h, publicKey, now, a.o.CertDuration)
}

// issueFor is issue with a lifetime other than CertDuration (a device's, see device.go).
func (a *Authority) issueFor(tx Tx, h Host, publicKey []byte, now time.Time, life time.Duration) (*cert.Certificate, []byte, error) {
	ca := a.active
	if ca.Cert.Expired(now) {
		return nil, nil, ErrNoActiveCA
	}
	nb, na := validity(now, ca.Cert, life)
	c := hostCert(h.Name, h.Addrs())
	c.Details.Groups, c.Details.Subnets = slices.Clone(h.Groups), slices.Clone(h.Subnets)
	c.Details.NotBefore, c.Details.NotAfter = nb, na
	c.Details.PublicKey, c.Details.Issuer = slices.Clone(publicKey), ca.Cert.Fingerprint()
	if err := c.CheckConstraints(ca.Cert); err != nil {
		return nil, nil, err
	}
	if err := c.Sign(ca.Key); err != nil {
		return nil, nil, err
	}
	p, err := c.MarshalPEM()
	if err != nil {
		return nil, nil, err
	}
	err = tx.PutCert(CertRecord{Fingerprint: c.Fingerprint(), Host: h.Name, Issuer: c.Details.Issuer,
		NotBefore: nb.UTC(), NotAfter: na.UTC(), Issued: now.UTC(), PEM: p, Bundle: a.bundleID(now)})
	return c, p, err
}

// backdateFor is how far before issuance a cert of lifetime life starts: a minute, but at
// most a tenth of the lifetime, so short-lived certs keep most of their life ahead of them.
func backdateFor(life time.Duration) time.Duration { return min(maxBackdate, life/10) }

// validity is the NotBefore and NotAfter of a cert of lifetime life issued at now by ca:
// NotAfter − NotBefore is life (the backdating is part of it, not added to it), cut short only
// by the CA's own NotAfter. Both are whole seconds, as the cert encoding keeps them.
func validity(now time.Time, ca *cert.Certificate, life time.Duration) (nb, na time.Time) {
	life = life.Truncate(time.Second)
	nb = now.Add(-backdateFor(life).Truncate(time.Second)).Truncate(time.Second)
	if nb.Before(ca.Details.NotBefore) {
		nb = ca.Details.NotBefore
	}
	na = nb.Add(life)
	if na.After(ca.Details.NotAfter) {
		na = ca.Details.NotAfter // a host cert never outlives its CA
	}
	return nb, na
}

// checkPublicKey refuses keys that are not X25519 points or that give an all-zero shared
// secret (low-order points), which crypto/ecdh reports as an error.
func (a *Authority) checkPublicKey(pub []byte) error {
	k, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if _, err := a.serviceKey.ECDH(k); err != nil {
		return fmt.Errorf("%w: low-order point", ErrBadKey)
	}
	return nil
}

// Enrollment is what a new host receives.
type Enrollment struct {
	Cert        *cert.Certificate
	CertPEM     []byte
	CABundle    []byte
	Lighthouses []Lighthouse
	// ServiceKey is the X25519 public key renewal proofs are made with.
	ServiceKey []byte
}

// Enroll consumes the token whose secret is given and issues a certificate for the identity
// it binds, with publicKey. Checking and consuming the token and recording the certificate
// are one transaction, so of any number of racing enrollments exactly one succeeds.
func (a *Authority) Enroll(secret, publicKey []byte) (Enrollment, error) {
	if len(secret) != secretSize {
		return Enrollment{}, ErrTokenUnknown
	}
	if err := a.checkPublicKey(publicKey); err != nil {
		return Enrollment{}, err
	}
	hash := tokenHash(secret)
	now := a.o.Now()
	var c *cert.Certificate
	var p []byte
	var host string
	err := a.o.Store.Update(func(tx Tx) error {
		tok, ok, err := tx.Token(hash)
		if err != nil {
			return err
		}
		// The lookup is by hash; the comparison guards against a store that matched loosely.
		if !ok || subtle.ConstantTimeCompare([]byte(tok.Hash), []byte(hash)) != 1 {
			return ErrTokenUnknown
		}
		h, ok, err := tx.Host(tok.Host)
		if err != nil {
			return err
		}
		// Revocation voids every token ever issued for the host, used, expired, superseded
		// or outstanding; it is checked first so the error says why.
		if ok && h.State == HostRevoked {
			return fmt.Errorf("%w: %s: its enrollment tokens are void", ErrRevoked, h.Name)
		}
		if tok.Used {
			return ErrTokenUsed
		}
		if now.After(tok.Expires) {
			return ErrTokenExpired
		}
		switch {
		case !ok || h.TokenHash != hash:
			return ErrTokenUnknown // superseded by a newer invite
		case h.State != HostInvited:
			return ErrTokenUsed
		}
		c, p, err = a.issue(tx, h, publicKey, now)
		if err != nil {
			return err
		}
		tok.Used, tok.UsedAt = true, now.UTC()
		if err := tx.PutToken(tok); err != nil {
			return err
		}
		h.State, h.Enrolled, h.Fingerprint, h.NotAfter = HostEnrolled, now.UTC(), c.Fingerprint(), c.Details.NotAfter
		if err := tx.PutHost(h); err != nil {
			return err
		}
		host = h.Name
		return a.audit(tx, AuditEntry{Action: "enroll", Host: h.Name, Fingerprint: c.Fingerprint(),
			Detail: fmt.Sprintf("token=%s not_after=%s", tokenID(hash), c.Details.NotAfter.UTC().Format(time.RFC3339))})
	})
	if err != nil {
		a.o.Logger.Warn("enrollment refused", "token_id", tokenID(hash), "err", err)
		return Enrollment{}, err
	}
	a.o.Logger.Info("enrolled host", "host", host, "fingerprint", c.Fingerprint())
	return Enrollment{Cert: c, CertPEM: p, CABundle: a.Bundle(), Lighthouses: slices.Clone(a.o.Lighthouses), ServiceKey: a.ServicePublicKey()}, nil
}

// RevokeResult says what a revocation did.
type RevokeResult struct {
	Host         string   // "" for a fingerprint of no known host
	Fingerprints []string // newly blocked
	Version      uint64   // blocklist version after the revocation
	// Warning is set when the blocklist has grown too large for nodes to accept: it is
	// not published until it shrinks (see Blocklist).
	Warning string `json:",omitempty"`
}

// Revoke blocks a host (by name) or a certificate (by fingerprint). Revoking a certificate
// of a known host revokes the host: its certificates that are still valid are blocked and it
// can neither renew nor enroll again (until replaced, see InviteRequest.Replace). An
// unknown fingerprint (a cert signed by hand) is blocked on its own.
func (a *Authority) Revoke(target string) (RevokeResult, error) {
	return a.revoke(target, "")
}

func (a *Authority) revoke(target, admin string) (RevokeResult, error) {
	now := a.o.Now().UTC()
	var res RevokeResult
	err := a.o.Store.Update(func(tx Tx) error {
		res = RevokeResult{} // a store may run this more than once (pgstore retries)
		name := ""
		if h, ok, err := tx.Host(target); err != nil {
			return err
		} else if ok {
			name = h.Name
		} else if r, ok, err := tx.Cert(target); err != nil {
			return err
		} else if ok {
			name = r.Host
		} else if !isFingerprint(target) {
			return fmt.Errorf("%w: %q", ErrNotFound, target)
		}
		res.Host = name
		var err error
		if name == "" {
			if _, ok, err := tx.Revocation(target); err != nil {
				return err
			} else if !ok {
				if err := tx.PutRevocation(Revocation{Fingerprint: target, Time: now}); err != nil {
					return err
				}
				res.Fingerprints = []string{target}
				if res.Version, err = tx.BumpBlocklistVersion(); err != nil {
					return err
				}
			}
		} else {
			h, _, err := tx.Host(name)
			if err != nil {
				return err
			}
			h.State, h.Revoked = HostRevoked, now
			if err := tx.PutHost(h); err != nil {
				return err
			}
			if res.Fingerprints, res.Version, err = a.revokeCerts(tx, name, now); err != nil {
				return err
			}
		}
		if res.Version == 0 {
			if res.Version, err = tx.BlocklistVersion(); err != nil {
				return err
			}
		}
		detail := fmt.Sprintf("target=%s blocked=%d version=%d", target, len(res.Fingerprints), res.Version)
		if err := a.audit(tx, AuditEntry{Action: "revoke", Host: name, Admin: admin, Detail: detail}); err != nil {
			return err
		}
		fps, err := a.blocklistEntries(tx, now)
		if err != nil {
			return err
		}
		if err := blocklistFits(fps); err != nil {
			res.Warning = a.blocklistAlarm(tx, res.Version, err)
		}
		return nil
	})
	if err != nil {
		return RevokeResult{}, err
	}
	a.o.Logger.Info("revoked", "host", res.Host, "blocked", len(res.Fingerprints), "version", res.Version)
	return res, nil
}

// revokeCerts blocks every certificate of host that a node could still accept (unexpired,
// give or take the clock skew) and is not blocked yet, and bumps the blocklist version if
// it blocked any (otherwise the version returned is 0). Expired certs are dead everywhere
// already: listing them would only let a host that renewed often grow the list.
func (a *Authority) revokeCerts(tx Tx, host string, now time.Time) ([]string, uint64, error) {
	certs, err := tx.HostCerts(host)
	if err != nil {
		return nil, 0, err
	}
	var fps []string
	for _, c := range certs {
		if now.After(c.NotAfter.Add(a.o.MaxClockSkew)) {
			continue
		}
		if _, ok, err := tx.Revocation(c.Fingerprint); err != nil {
			return nil, 0, err
		} else if ok {
			continue
		}
		if err := tx.PutRevocation(Revocation{Fingerprint: c.Fingerprint, Host: host, Time: now, NotAfter: c.NotAfter}); err != nil {
			return nil, 0, err
		}
		fps = append(fps, c.Fingerprint)
	}
	if len(fps) == 0 {
		return nil, 0, nil
	}
	slices.Sort(fps)
	v, err := tx.BumpBlocklistVersion()
	return fps, v, err
}

// blocklistEntries is what the published list holds: every revocation whose cert a node
// could still accept. An entry leaves once its cert has expired by more than the clock skew
// the service allows (a node whose clock is off by more cannot renew either).
func (a *Authority) blocklistEntries(tx Tx, now time.Time) ([]string, error) {
	rs, err := tx.Revocations()
	if err != nil {
		return nil, err
	}
	var fps []string
	for _, r := range rs {
		if r.NotAfter.IsZero() || !now.After(r.NotAfter.Add(a.o.MaxClockSkew)) {
			fps = append(fps, r.Fingerprint)
		}
	}
	return fps, nil
}

// blocklistFits reports whether nodes would accept a list of fps: the entry count within
// cert.MaxBlocklistEntries and the JSON within the client's MaxResponseSize (less a margin).
func blocklistFits(fps []string) error {
	if len(fps) > cert.MaxBlocklistEntries {
		return fmt.Errorf("%w: %d entries, nodes accept at most %d", ErrBlocklistTooLarge, len(fps), cert.MaxBlocklistEntries)
	}
	j, err := json.Marshal(SignedBlocklist{Version: 1<<64 - 1, Issued: 1<<63 - 1, CA: strings.Repeat("0", 64),
		Fingerprints: fps, Signature: make([]byte, 64)})
	if err != nil {
		return err
	}
	if len(j) > MaxResponseSize-1024 {
		return fmt.Errorf("%w: %d entries, %d bytes of JSON, nodes read at most %d", ErrBlocklistTooLarge, len(fps), len(j), MaxResponseSize)
	}
	return nil
}

// blocklistAlarm logs that version cannot be published and audits it in tx, once per
// version in this process. It returns the message for the operator.
func (a *Authority) blocklistAlarm(tx Tx, version uint64, cause error) string {
	msg := fmt.Sprintf("blocklist version %d is not published: %v; nodes keep their last list, so revoked hosts keep their tunnels. "+
		"Entries leave the list as their certificates expire; a shorter durations.cert makes that sooner", version, cause)
	a.alarmMu.Lock()
	defer a.alarmMu.Unlock()
	if a.alarmed == version {
		return msg
	}
	a.o.Logger.Error("ALARM: "+msg, "version", version)
	if err := a.audit(tx, AuditEntry{Action: "blocklist-alarm", Detail: msg}); err != nil {
		a.o.Logger.Error("cannot audit the blocklist alarm", "err", err)
		return msg
	}
	a.alarmed = version
	return msg
}

// Blocklist returns the current revocation list signed by the active CA, without entries
// whose certificate has expired. A list nodes would refuse is not published: the error is
// ErrBlocklistTooLarge, and the service logs and audits an alarm (once per version).
func (a *Authority) Blocklist() (SignedBlocklist, error) {
	var fps []string
	var v uint64
	now := a.o.Now()
	err := a.o.Store.View(func(tx Tx) error {
		var err error
		if fps, err = a.blocklistEntries(tx, now); err != nil {
			return err
		}
		v, err = tx.BlocklistVersion()
		return err
	})
	if err != nil {
		return SignedBlocklist{}, err
	}
	if err := blocklistFits(fps); err != nil {
		a.alarmMu.Lock()
		done := a.alarmed == v
		a.alarmMu.Unlock()
		if !done {
			if uerr := a.o.Store.Update(func(tx Tx) error { a.blocklistAlarm(tx, v, err); return nil }); uerr != nil {
				a.o.Logger.Error("cannot audit the blocklist alarm", "err", uerr)
			}
		}
		return SignedBlocklist{}, err
	}
	return signBlocklist(v, now.Unix(), fps, a.active), nil
}
