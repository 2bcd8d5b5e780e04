package authority

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// KindDevice marks a host that runs one of Nebula's own apps (Mobile Nebula, the desktop
// nebula binary): it made its key itself and showed the admin only the public key, the
// admin had a certificate signed for it, and the user imports that certificate by hand.
// Nothing renews it, so its certificates live longer and a reminder comes before they end.
const KindDevice = "device"

// DefaultDeviceCertDuration is a device certificate's lifetime when none is given.
const DefaultDeviceCertDuration = 365 * 24 * time.Hour

// DeviceRequest asks for a certificate for a device's own public key.
type DeviceRequest struct {
	Name   string
	CIDR   string     // "" on a re-issue: the device keeps its own
	IP     netip.Addr // zero: the next free address of CIDR (or the device's own on a re-issue)
	Groups []string   // nil on a re-issue: the device keeps its own
	// PublicKey is the device's X25519 public key, raw or as the PEM the apps show
	// (NEBULA X25519 PUBLIC KEY). Nil on a re-issue: the key of the current certificate.
	PublicKey []byte
	// Reissue signs again for a device on record: with the same key (a new expiry date), or
	// with a new one, which revokes every certificate of the old key.
	Reissue  bool
	Lifetime time.Duration // zero: DefaultDeviceCertDuration (never past the CA's end)
}

// DeviceCert is what a device imports.
type DeviceCert struct {
	Host     Host
	Cert     *cert.Certificate
	CertPEM  []byte
	CABundle []byte
	// Revoked are the certificates of a replaced key that this issue blocked.
	Revoked []string
}

// devicePublicKey accepts the key as the apps show it (PEM) or as raw bytes.
func devicePublicKey(b []byte) ([]byte, error) {
	if k, _, err := cert.UnmarshalX25519PublicKey(b); err == nil {
		return k, nil
	}
	if len(b) == 32 {
		return slices.Clone(b), nil
	}
	return nil, fmt.Errorf("%w: expected a %s PEM block", ErrBadKey, cert.PEMX25519PublicKey)
}

// IssueDevice signs a certificate for a device's key; admin is recorded in the audit log.
func (a *Authority) IssueDevice(req DeviceRequest, admin string) (DeviceCert, error) {
	if err := checkName("host", req.Name); err != nil {
		return DeviceCert{}, err
	}
	for _, g := range req.Groups {
		if err := checkName("group", g); err != nil {
			return DeviceCert{}, err
		}
	}
	var pub []byte
	if req.PublicKey != nil {
		var err error
		if pub, err = devicePublicKey(req.PublicKey); err != nil {
			return DeviceCert{}, err
		}
		if err := a.checkPublicKey(pub); err != nil {
			return DeviceCert{}, err
		}
	} else if !req.Reissue {
		return DeviceCert{}, fmt.Errorf("%w: a new device needs its public key", ErrBadKey)
	}
	life := req.Lifetime
	if life <= 0 {
		life = DefaultDeviceCertDuration
	}
	now := a.o.Now()
	var out DeviceCert
	given := req
	err := a.o.Store.Update(func(tx Tx) error {
		req, key := given, pub // a store may run this more than once (pgstore retries)
		out = DeviceCert{}
		t, err := treeOf(tx)
		if err != nil {
			return err
		}
		prev, found, err := tx.Host(req.Name)
		if err != nil {
			return err
		}
		var h Host
		action := "device-add"
		switch {
		case found && !req.Reissue:
			return fmt.Errorf("%w: host %s exists; re-issue it instead", ErrNameTaken, req.Name)
		case !found && req.Reissue:
			return fmt.Errorf("%w: device %s", ErrNotFound, req.Name)
		case found:
			if prev.Kind != KindDevice {
				return fmt.Errorf("%w: %s joined with a token, not as a device: invite it again with replace", ErrNameTaken, req.Name)
			}
			h = prev
			if req.Groups != nil {
				h.Groups = slices.Clone(req.Groups)
			}
			cur, ok, err := tx.Cert(prev.Fingerprint)
			if err != nil {
				return err
			}
			var old []byte
			if ok {
				if c, _, err := cert.UnmarshalPEM(cur.PEM); err == nil {
					old = c.Details.PublicKey
				}
			}
			if key == nil {
				if old == nil {
					return fmt.Errorf("%w: no certificate of %s on record to take the key from", ErrNotFound, req.Name)
				}
				key = old
			}
			action = "device-reissue"
			if old == nil || !slices.Equal(old, key) || prev.State == HostRevoked {
				// A new key (a new phone, a wiped app): the old key's certificates must stop working.
				if out.Revoked, _, err = a.revokeCerts(tx, h.Name, now.UTC()); err != nil {
					return err
				}
				action = "device-rekey"
			}
		default:
			if _, ok := t.Get(req.CIDR); !ok {
				return fmt.Errorf("%w: %s", ErrCIDRUnknown, req.CIDR)
			}
			hs, err := tx.Hosts()
			if err != nil {
				return err
			}
			ip := req.IP
			if ip.IsValid() {
				if err := t.CheckAddr(req.CIDR, ip); err != nil {
					return err
				}
				if hostHolds(hs, ip) {
					return fmt.Errorf("%w: %v", ErrIPTaken, ip)
				}
			} else {
				taken := a.takenSet(hs)
				if ip, err = t.NextFree(req.CIDR, func(x netip.Addr) bool { return taken[x] }); err != nil {
					return err
				}
			}
			h = Host{Name: req.Name, IP: t.HostPrefix(req.CIDR, ip), Groups: slices.Clone(req.Groups),
				CIDR: req.CIDR, Kind: KindDevice, Enrolled: now.UTC()}
		}
		id := Identity{Name: h.Name, IP: h.IP, Groups: h.Groups, CIDR: h.CIDR, Subnets: h.Subnets}
		if err := a.checkIssuable(id); err != nil {
			return err
		}
		c, p, err := a.issueFor(tx, h, key, now, life)
		if err != nil {
			return err
		}
		if found {
			h.PrevFingerprint, h.LastRenewal = h.Fingerprint, now.UTC()
		}
		h.State, h.Fingerprint, h.NotAfter, h.TokenHash = HostEnrolled, c.Fingerprint(), c.Details.NotAfter, ""
		if err := tx.PutHost(h); err != nil {
			return err
		}
		out.Host, out.Cert, out.CertPEM = h, c, p
		return a.audit(tx, AuditEntry{Action: action, Host: h.Name, Fingerprint: c.Fingerprint(), Admin: admin,
			Detail: fmt.Sprintf("ip=%v groups=%v not_after=%s revoked=%d", h.IP, h.Groups, c.Details.NotAfter.UTC().Format(time.RFC3339), len(out.Revoked))})
	})
	if err != nil {
		return DeviceCert{}, err
	}
	out.CABundle = a.Bundle()
	a.o.Logger.Info("device certificate issued", "host", out.Host.Name, "fingerprint", out.Cert.Fingerprint(), "admin", admin)
	return out, nil
}

// DeviceCertPEM is the current certificate of host name, as on record.
func (a *Authority) DeviceCertPEM(name string) (Host, []byte, error) {
	var h Host
	var p []byte
	err := a.o.Store.View(func(tx Tx) error {
		var ok bool
		var err error
		if h, ok, err = tx.Host(name); err != nil {
			return err
		} else if !ok || h.Fingerprint == "" {
			return fmt.Errorf("%w: %s has no certificate", ErrNotFound, name)
		}
		r, ok, err := tx.Cert(h.Fingerprint)
		if err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: certificate %s", ErrNotFound, h.Fingerprint)
		}
		p = r.PEM
		return nil
	})
	return h, p, err
}

// InviteAs is Invite with the console admin who asked recorded in the audit log.
func (a *Authority) InviteAs(req InviteRequest, admin string) (string, Identity, error) {
	return a.invite(req, admin)
}

// RevokeAs is Revoke with the console admin who asked recorded in the audit log.
func (a *Authority) RevokeAs(target, admin string) (RevokeResult, error) {
	return a.revoke(target, admin)
}

// CAInfo describes one CA the service knows, for status pages.
type CAInfo struct {
	Name        string
	Fingerprint string
	NotBefore   time.Time
	NotAfter    time.Time
	Version     int
	Signs       bool // the active CA
	HasKey      bool
	Expired     bool
}

// CAs lists the CAs in order of preference (Options.CAs).
func (a *Authority) CAs() []CAInfo {
	now := a.o.Now()
	out := make([]CAInfo, 0, len(a.o.CAs))
	for _, ca := range a.o.CAs {
		out = append(out, CAInfo{Name: ca.Cert.Details.Name, Fingerprint: ca.Cert.Fingerprint(),
			NotBefore: ca.Cert.Details.NotBefore, NotAfter: ca.Cert.Details.NotAfter, Version: int(ca.Cert.Version()),
			Signs: ca.Cert == a.active.Cert, HasKey: ca.Key != nil, Expired: ca.Cert.Expired(now)})
	}
	return out
}

// Lighthouses are the lighthouses handed to enrolling hosts.
func (a *Authority) Lighthouses() []Lighthouse { return slices.Clone(a.o.Lighthouses) }

// CertDuration is a host certificate's lifetime (renewal comes at 2/3 of it).
func (a *Authority) CertDuration() time.Duration { return a.o.CertDuration }

// RecordAudit appends an event of the console (a sign-in) to the audit log.
func (a *Authority) RecordAudit(e AuditEntry) error {
	return a.o.Store.Update(func(tx Tx) error { return a.audit(tx, e) })
}
