package authority

import (
	"errors"
	"net/netip"
	"time"
)

// Store errors.
var (
	// ErrStoreLocked means another process holds the store file (a running mesh-cert serve).
	ErrStoreLocked = errors.New("store is locked by another process")
	// ErrStoreClosed is returned by a store after Close.
	ErrStoreClosed = errors.New("store is closed")
)

// Store keeps the authority's state. Every read-check-write happens inside one Update, which
// is atomic and isolated: concurrent Updates behave as if run one after another, and an
// Update whose function returns an error leaves nothing behind. That is what makes a token
// single-use under concurrency (Tailscale TS-2025-007 validated in one transaction and
// consumed in another).
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed durably if fn returns nil.
	Update(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Getters return ok=false for a missing record. Records returned are
// copies: changing them changes nothing until they are put back.
type Tx interface {
	CIDR(name string) (CIDR, bool, error)
	PutCIDR(CIDR) error
	CIDRs() ([]CIDR, error)

	Host(name string) (Host, bool, error)
	PutHost(Host) error
	Hosts() ([]Host, error)

	Cert(fingerprint string) (CertRecord, bool, error)
	PutCert(CertRecord) error
	Certs() ([]CertRecord, error)
	// HostCerts is every certificate issued to host (any order). Renewal counts a host's
	// unexpired certificates with it, so it must not cost a scan of every host's.
	HostCerts(host string) ([]CertRecord, error)

	// Token looks a token up by the hex SHA-256 of its secret; the secret itself is never stored.
	Token(hash string) (TokenRecord, bool, error)
	PutToken(TokenRecord) error
	// Tokens is every token on record (for copying a store; ordinary requests look up one).
	Tokens() ([]TokenRecord, error)

	Revocation(fingerprint string) (Revocation, bool, error)
	PutRevocation(Revocation) error
	Revocations() ([]Revocation, error)

	// BlocklistVersion is 0 until the first revocation; BumpBlocklistVersion returns the new one.
	BlocklistVersion() (uint64, error)
	BumpBlocklistVersion() (uint64, error)

	// Nonces of renewal requests, remembered until they are too old to be accepted anyway.
	NonceSeen(host string, nonce []byte) (bool, error)
	PutNonce(host string, nonce []byte, at time.Time) error
	PruneNonces(before time.Time) error
	// Nonces is every nonce remembered (for copying a store).
	Nonces() ([]Nonce, error)

	// AppendAudit adds an entry and returns its sequence number (1, 2, ...). The audit log
	// has no way to change or delete an entry.
	AppendAudit(AuditEntry) (uint64, error)
	Audit() ([]AuditEntry, error)
}

// CIDR is a named network of the inventory. The tree is implied by containment: a CIDR's
// parent is the smallest other CIDR that contains it.
type CIDR struct {
	Name string `json:"name"`
	// Prefix is the network, IPv4 or IPv6; Prefix6 is the IPv6 one beside an IPv4 Prefix
	// (a dual-stack network). Zero, it is left out of the JSON, so v4 records stay as they were.
	Prefix  netip.Prefix `json:"prefix"`
	Prefix6 netip.Prefix `json:"prefix6,omitzero"`
}

// HostState is where a host is in its life.
type HostState string

const (
	HostInvited  HostState = "invited"
	HostEnrolled HostState = "enrolled"
	HostRevoked  HostState = "revoked"
)

// Host is the identity on record for one name; certificates are only ever issued for it.
type Host struct {
	Name string `json:"name"`
	// IP is the VPN address with the overlay's mask length (10.42.0.5/16), as in a cert.
	IP netip.Prefix `json:"ip"`
	// IP6 is the IPv6 address of a host in a dual-stack network (IP is then its IPv4 one; in
	// an IPv6-only network IP is IPv6 and IP6 is zero). A host with an IPv6 address gets v2
	// certificates, which can carry it.
	IP6    netip.Prefix `json:"ip6,omitzero"`
	Groups []string     `json:"groups,omitempty"`
	// Subnets are the networks the host may route for (a gateway's LAN): its
	// certificates carry them as unsafe networks.
	Subnets []netip.Prefix `json:"subnets,omitempty"`
	CIDR    string         `json:"cidr"`
	State   HostState      `json:"state"`
	// TokenHash is the latest invite's token; an older one no longer enrolls.
	TokenHash string `json:"token_hash,omitempty"`

	Fingerprint     string    `json:"fingerprint,omitempty"`      // current cert
	PrevFingerprint string    `json:"prev_fingerprint,omitempty"` // the one it replaced
	NotAfter        time.Time `json:"not_after"`
	Enrolled        time.Time `json:"enrolled"`
	LastRenewal     time.Time `json:"last_renewal"`
	RenewCounter    uint64    `json:"renew_counter"`
	Revoked         time.Time `json:"revoked"`
	// EarlyRenewals are the times of the renewals made before half of the renewed cert's
	// lifetime, within the last certificate lifetime (the burst allowance, see Renew).
	EarlyRenewals []time.Time `json:"early_renewals,omitempty"`
	// Kind is how the host joined: "" with an enrollment token, KindDevice when an admin
	// signed a certificate for a key made by one of Nebula's apps (see device.go).
	Kind string `json:"kind,omitempty"`
	// ForkReported is the superseded certificate whose renewal attempt was last audited
	// as a possible key theft, so one copy cannot flood the audit log.
	ForkReported string `json:"fork_reported,omitempty"`
}

// Addrs are the host's addresses: IP, then IP6 if it has one.
func (h Host) Addrs() []netip.Prefix {
	if h.IP6.IsValid() {
		return []netip.Prefix{h.IP, h.IP6}
	}
	return []netip.Prefix{h.IP}
}

// CertRecord is one issued certificate.
type CertRecord struct {
	Fingerprint string    `json:"fingerprint"`
	Host        string    `json:"host"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Issued      time.Time `json:"issued"`
	PEM         []byte    `json:"pem"`
	// Bundle identifies the CA bundle the cert was issued with (see Authority.bundleID): a
	// renewal after the CA list changed brings the host the new bundle and is never early.
	Bundle string `json:"bundle,omitempty"`
}

// TokenRecord is an enrollment token, known by the hash of its secret.
type TokenRecord struct {
	Hash    string    `json:"hash"` // hex SHA-256 of the secret
	Host    string    `json:"host"` // the identity it binds
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Used    bool      `json:"used"`
	UsedAt  time.Time `json:"used_at"`
}

// Revocation blocks one certificate fingerprint.
type Revocation struct {
	Fingerprint string    `json:"fingerprint"`
	Host        string    `json:"host,omitempty"`
	Time        time.Time `json:"time"`
	// NotAfter of the blocked cert, zero if unknown; the blocklist drops an entry some time
	// after its cert has expired, so the list does not grow with every renewal forever.
	NotAfter time.Time `json:"not_after"`
}

// Nonce is a renewal request's nonce the store remembers, with when it was seen.
type Nonce struct {
	Host  string    `json:"host"`
	Nonce []byte    `json:"nonce"`
	At    time.Time `json:"at"`
}

// AuditEntry records one event. It never holds a token secret or a key.
type AuditEntry struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Action      string    `json:"action"`
	Host        string    `json:"host,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	// Admin is the console account that acted ("" for the CLI, the admin socket and nodes).
	Admin string `json:"admin,omitempty"`
}
