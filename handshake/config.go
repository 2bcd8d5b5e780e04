package handshake

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/flynn/noise"

	"github.com/meshnode/meshnode/cert"
)

// Credentials are this host's identity: its certificate and X25519 private key. Build them
// with NewCredentials. The caller may swap a Config's Credentials between handshakes (cert
// renewal); a handshake in progress keeps the ones it started with.
type Credentials struct {
	Cert       *cert.Certificate
	PrivateKey []byte // X25519, 32 bytes

	hsCert    []byte // Cert.MarshalHandshake(), computed once: it is sent in every handshake
	publicKey []byte // the Noise static public key, = Cert.Details.PublicKey
	vpnIP     netip.Addr
}

// NewCredentials checks that privateKey belongs to c and that c can identify a host (not a
// CA, at least one IP), and precomputes the certificate bytes sent in handshakes.
func NewCredentials(c *cert.Certificate, privateKey []byte) (*Credentials, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrCredentials)
	}
	if c.Details.IsCA {
		return nil, fmt.Errorf("%w: %s is a CA certificate", ErrCredentials, c.Details.Name)
	}
	if len(c.Details.Ips) == 0 {
		return nil, fmt.Errorf("%w: certificate %s has no IPs", ErrCredentials, c.Details.Name)
	}
	if len(privateKey) != noiseKeyLen {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrCredentials, len(privateKey), noiseKeyLen)
	}
	if err := c.VerifyPrivateKey(privateKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	hs, err := c.MarshalHandshake()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return &Credentials{
		Cert:       c,
		PrivateKey: bytes.Clone(privateKey),
		hsCert:     hs,
		publicKey:  bytes.Clone(c.Details.PublicKey),
		vpnIP:      c.VpnIP(),
	}, nil
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
}

// settings is a validated snapshot of a Config, taken when a handshake starts.
type settings struct {
	cipher Cipher
	suite  noise.CipherSuite
	local  *Credentials
	pool   *cert.Pool
	now    func() time.Time
	rand   io.Reader
}

func (cfg *Config) settings() (*settings, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrConfig)
	}
	if cfg.Local == nil || cfg.Local.hsCert == nil || len(cfg.Local.publicKey) != noiseKeyLen {
		return nil, fmt.Errorf("%w: Local credentials missing (build them with NewCredentials)", ErrConfig)
	}
	if cfg.Pool == nil {
		return nil, fmt.Errorf("%w: no CA pool", ErrConfig)
	}
	suite, err := cfg.Cipher.noiseSuite()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := &settings{cipher: cfg.Cipher, suite: suite, local: cfg.Local, pool: cfg.Pool, now: cfg.Now, rand: cfg.Rand}
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
	// Send and Recv are the data-plane keys (initiator: Noise cs1 sends, cs2 receives;
	// responder the opposite). The first data packet each side sends has counter 3.
	Send, Recv *AEAD
}

func (s *settings) result(peer, ca *cert.Certificate, local, remote uint32, peerTime uint64, send, recv *noise.CipherState) (*Result, error) {
	sk, rk := send.UnsafeKey(), recv.UnsafeKey()
	sa, err := NewAEAD(s.cipher, sk[:])
	if err != nil {
		return nil, err
	}
	ra, err := NewAEAD(s.cipher, rk[:])
	if err != nil {
		return nil, err
	}
	return &Result{PeerCert: peer, CA: ca, LocalIndex: local, RemoteIndex: remote, PeerTime: peerTime, Send: sa, Recv: ra}, nil
}

// verifyPeer rebuilds the peer's certificate around its Noise static key and verifies it
// against the pool. Because the signature covers the public key, a certificate only
// verifies for the host that holds the matching private key.
func (s *settings) verifyPeer(certBytes, peerStatic []byte) (peer, ca *cert.Certificate, err error) {
	if len(certBytes) == 0 {
		return nil, nil, fmt.Errorf("%w: no certificate in payload", ErrInvalidCert)
	}
	peer, err = cert.UnmarshalHandshake(certBytes, peerStatic)
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
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   s.suite,
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
