package handshake

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/flynn/noise"

	"github.com/meshnode/meshnode/cert"
)

// Credentials are this host's identity: its certificates (a v1 and/or a v2 one, as Nebula
// 1.10+ allows) and X25519 private key. Build them with NewCredentials or
// NewCredentialSet. The caller may swap a Config's Credentials between handshakes (cert
// renewal); a handshake in progress keeps the ones it started with.
type Credentials struct {
	// Cert is the certificate of the initiating version (Nebula's default certificate):
	// the one renewed, named in status output and sent first.
	Cert       *cert.Certificate
	PrivateKey []byte // X25519, 32 bytes

	byVersion  [3]*versionCert  // indexed by cert.Version
	staticKey  *ecdh.PrivateKey // PrivateKey parsed once (dh.go)
	initiating cert.Version
	publicKey  []byte // the Noise static public key, shared by every certificate
	vpnIP      netip.Addr
}

// versionCert is one certificate and the bytes sent for it in handshakes, computed once.
type versionCert struct {
	cert   *cert.Certificate
	hsCert []byte
}

// NewCredentials checks that privateKey belongs to c and that c can identify a host (not a
// CA, at least one IP), and precomputes the certificate bytes sent in handshakes. The
// certificate's version is the only one held.
func NewCredentials(c *cert.Certificate, privateKey []byte) (*Credentials, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrCredentials)
	}
	return NewCredentialSet([]*cert.Certificate{c}, privateKey, 0)
}

// NewCredentialSet is NewCredentials for a host holding a v1 and a v2 certificate (or
// either alone). As in Nebula 1.10+, both must hold the same public key and the same first
// network, so a peer finds the same host whichever it is shown. initiating is the version
// handshakes start with (pki.initiating_version); 0 means v1 when a v1 certificate is
// held, else v2. Asking for a version not held is an error.
func NewCredentialSet(certs []*cert.Certificate, privateKey []byte, initiating cert.Version) (*Credentials, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrCredentials)
	}
	if len(privateKey) != noiseKeyLen {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrCredentials, len(privateKey), noiseKeyLen)
	}
	cr := &Credentials{PrivateKey: bytes.Clone(privateKey)}
	sk, err := ecdh.X25519().NewPrivateKey(cr.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	cr.staticKey = sk
	for _, c := range certs {
		if c == nil {
			return nil, fmt.Errorf("%w: no certificate", ErrCredentials)
		}
		v := c.Version()
		if v != cert.Version1 && v != cert.Version2 {
			return nil, fmt.Errorf("%w: %s: unknown certificate version %d", ErrCredentials, c.Details.Name, v)
		}
		if cr.byVersion[v] != nil {
			return nil, fmt.Errorf("%w: more than one %s certificate", ErrCredentials, v)
		}
		if c.Details.IsCA {
			return nil, fmt.Errorf("%w: %s is a CA certificate", ErrCredentials, c.Details.Name)
		}
		if len(c.Details.Ips) == 0 {
			return nil, fmt.Errorf("%w: certificate %s has no IPs", ErrCredentials, c.Details.Name)
		}
		if err := c.VerifyPrivateKey(privateKey); err != nil {
			return nil, fmt.Errorf("%w: %s certificate: %w", ErrCredentials, v, err)
		}
		hs, err := c.MarshalHandshake()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
		}
		cr.byVersion[v] = &versionCert{cert: c, hsCert: hs}
	}
	if v1, v2 := cr.byVersion[cert.Version1], cr.byVersion[cert.Version2]; v1 != nil && v2 != nil {
		if !bytes.Equal(v1.cert.Details.PublicKey, v2.cert.Details.PublicKey) {
			return nil, fmt.Errorf("%w: the v1 and v2 certificates hold different public keys", ErrCredentials)
		}
		if v1.cert.Networks()[0] != v2.cert.Networks()[0] {
			return nil, fmt.Errorf("%w: the v1 certificate's first network %s differs from the v2 certificate's %s",
				ErrCredentials, v1.cert.Networks()[0], v2.cert.Networks()[0])
		}
	}
	switch {
	case initiating == 0 && cr.byVersion[cert.Version1] != nil:
		initiating = cert.Version1
	case initiating == 0:
		initiating = cert.Version2
	case initiating != cert.Version1 && initiating != cert.Version2:
		return nil, fmt.Errorf("%w: unknown initiating version %d", ErrCredentials, initiating)
	case cr.byVersion[initiating] == nil:
		return nil, fmt.Errorf("%w: initiating version %d needs a %s certificate", ErrCredentials, initiating, initiating)
	}
	cr.initiating = initiating
	cr.Cert = cr.byVersion[initiating].cert
	cr.publicKey = bytes.Clone(cr.Cert.Details.PublicKey)
	cr.vpnIP = cr.Cert.VpnIP()
	return cr, nil
}

// Initiating is the version handshakes start with unless the caller picks another.
func (c *Credentials) Initiating() cert.Version { return c.initiating }

// Has reports whether a certificate of version v is held.
func (c *Credentials) Has(v cert.Version) bool { return c.get(v) != nil }

// CertFor returns the certificate of version v, or nil.
func (c *Credentials) CertFor(v cert.Version) *cert.Certificate {
	if vc := c.get(v); vc != nil {
		return vc.cert
	}
	return nil
}

// Certs lists the certificates held, v1 first.
func (c *Credentials) Certs() []*cert.Certificate {
	var out []*cert.Certificate
	for _, vc := range c.byVersion {
		if vc != nil {
			out = append(out, vc.cert)
		}
	}
	return out
}

func (c *Credentials) get(v cert.Version) *versionCert {
	if int(v) >= len(c.byVersion) {
		return nil
	}
	return c.byVersion[v]
}

// replyVersion is the version a responder answers a peer showing version peer in: the
// peer's own when held (Nebula 1.10+ does the same), else the initiating one.
func (c *Credentials) replyVersion(peer cert.Version) cert.Version {
	if c.Has(peer) {
		return peer
	}
	return c.initiating
}

func (c *Credentials) keypair() noise.DHKey {
	return noise.DHKey{Private: c.PrivateKey, Public: c.publicKey}
}

// Config is what both roles need. Its zero Cipher is AES-GCM; a nil Now is time.Now and a
// nil Rand is crypto/rand. Local and Pool are required.
type Config struct {
	Cipher Cipher
	Local  *Credentials
	Pool   *cert.Pool
	// Now decides certificate validity and fills the payload Time field (unix ns).
	Now func() time.Time
	// Rand supplies ephemeral keys.
	Rand io.Reader
	// Version is the certificate version an initiator sends; 0 means Local's initiating
	// version. The responder ignores it (it answers in the initiator's version if it can).
	Version cert.Version
}

// settings is a validated snapshot of a Config, taken when a handshake starts.
type settings struct {
	cipher Cipher
	aead   noise.CipherFunc
	local  *Credentials
	pool   *cert.Pool
	now    func() time.Time
	rand   io.Reader
	ver    cert.Version
}

func (cfg *Config) settings() (*settings, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrConfig)
	}
	if cfg.Local == nil || cfg.Local.Cert == nil || len(cfg.Local.publicKey) != noiseKeyLen {
		return nil, fmt.Errorf("%w: Local credentials missing (build them with NewCredentials)", ErrConfig)
	}
	if cfg.Pool == nil {
		return nil, fmt.Errorf("%w: no CA pool", ErrConfig)
	}
	aead, err := cfg.Cipher.noiseCipher()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := &settings{cipher: cfg.Cipher, aead: aead, local: cfg.Local, pool: cfg.Pool, now: cfg.Now, rand: cfg.Rand, ver: cfg.Version}
	if s.ver == 0 {
		s.ver = cfg.Local.initiating
	}
	if !cfg.Local.Has(s.ver) {
		return nil, fmt.Errorf("%w: no %s certificate to send", ErrConfig, s.ver)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	return s, nil
}

// Result is a completed handshake: who the peer is and the keys for the tunnel.
type Result struct {
	// PeerCert is the peer's certificate with PublicKey set to its Noise static key.
	PeerCert *cert.Certificate
	// CA is the pool CA that issued PeerCert.
	CA *cert.Certificate
	// LocalIndex is ours: the peer writes it in the header of every packet it sends us.
	LocalIndex uint32
	// RemoteIndex is the peer's: we write it in the header of every packet we send.
	RemoteIndex uint32
	// PeerTime is the Time field of the peer's handshake payload (unix ns, peer's clock).
	PeerTime uint64
	// LocalVersion is the version of the certificate we sent; PeerCert.Version() is the
	// peer's. A tunnel below the version both could speak is re-handshaken by the caller.
	LocalVersion cert.Version
	// LocalCert is the certificate we sent (so a caller can tell when it was replaced).
	LocalCert *cert.Certificate
	// Send and Recv are the data-plane keys (initiator: Noise cs1 sends, cs2 receives;
	// responder the opposite). The first data packet each side sends has counter 3.
	Send, Recv *AEAD
}

func (s *settings) result(peer, ca *cert.Certificate, localVer cert.Version, local, remote uint32, peerTime uint64, send, recv *noise.CipherState) (*Result, error) {
	sk, rk := send.UnsafeKey(), recv.UnsafeKey()
	sa, err := NewAEAD(s.cipher, sk[:])
	if err != nil {
		return nil, err
	}
	ra, err := NewAEAD(s.cipher, rk[:])
	if err != nil {
		return nil, err
	}
	return &Result{PeerCert: peer, CA: ca, LocalVersion: localVer, LocalCert: s.local.CertFor(localVer), LocalIndex: local, RemoteIndex: remote, PeerTime: peerTime, Send: sa, Recv: ra}, nil
}

// verifyPeer rebuilds the peer's certificate (of the payload's CertVersion) around its
// Noise static key and verifies it against the pool. Because the signature covers the
// public key, a certificate only verifies for the host that holds the matching private
// key. Either version is accepted whatever we hold, as in Nebula 1.10+: the pool decides.
func (s *settings) verifyPeer(version uint32, certBytes, peerStatic []byte) (peer, ca *cert.Certificate, err error) {
	if len(certBytes) == 0 {
		return nil, nil, fmt.Errorf("%w: no certificate in payload", ErrInvalidCert)
	}
	if version > uint32(cert.Version2) {
		return nil, nil, fmt.Errorf("%w: unknown certificate version %d", ErrInvalidCert, version)
	}
	peer, err = cert.UnmarshalHandshakeVersion(cert.Version(version), certBytes, peerStatic)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidCert, err)
	}
	ca, err = s.pool.Verify(peer, s.now())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalidCert, peer.Details.Name, err)
	}
	if len(peer.Details.Ips) == 0 {
		return nil, nil, fmt.Errorf("%w: %s", ErrNoVPNIP, peer.Details.Name)
	}
	if peer.VpnIP() == s.local.vpnIP {
		return nil, nil, fmt.Errorf("%w: peer %s has our VPN IP %v", ErrSelf, peer.Details.Name, s.local.vpnIP)
	}
	return peer, ca, nil
}

func (s *settings) handshakeState(initiator bool, random io.Reader) (*noise.HandshakeState, error) {
	dh := &x25519{}
	if k := s.local.staticKey; k != nil { // nil in Credentials a test built by hand
		dh.static, dh.staticRaw = k, k.Bytes()
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(dh, s.aead, noise.HashSHA256),
		Random:        random,
		Pattern:       noise.HandshakeIX,
		Initiator:     initiator,
		StaticKeypair: s.local.keypair(),
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: noise state: %w", err)
	}
	return hs, nil
}
