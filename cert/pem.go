package cert

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
)

// PEM block types, as nebula-cert writes them.
const (
	PEMCertificate       = "NEBULA CERTIFICATE"
	PEMCertificateV2     = "NEBULA CERTIFICATE V2"
	PEMX25519PrivateKey  = "NEBULA X25519 PRIVATE KEY"
	PEMX25519PublicKey   = "NEBULA X25519 PUBLIC KEY"
	PEMEd25519PrivateKey = "NEBULA ED25519 PRIVATE KEY"
)

// MarshalPEM returns the certificate as a NEBULA CERTIFICATE (v1) or NEBULA CERTIFICATE V2
// PEM block.
func (c *Certificate) MarshalPEM() ([]byte, error) {
	b, err := c.Marshal()
	if err != nil {
		return nil, err
	}
	typ := PEMCertificate
	if c.Version() == Version2 {
		typ = PEMCertificateV2
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), nil
}

// UnmarshalPEM decodes the first PEM block of b, which must be a certificate of either
// version (the banner says which), and returns the bytes after it (a CA bundle holds
// several, and may mix versions).
func UnmarshalPEM(b []byte) (*Certificate, []byte, error) {
	p, rest := pem.Decode(b)
	if p == nil {
		return nil, rest, fmt.Errorf("%w: no PEM block found, want %s or %s", ErrMalformed, PEMCertificate, PEMCertificateV2)
	}
	var c *Certificate
	var err error
	switch p.Type {
	case PEMCertificate:
		c, err = UnmarshalV1(p.Bytes)
	case PEMCertificateV2:
		c, err = UnmarshalV2(p.Bytes)
	default:
		err = fmt.Errorf("%w: PEM block is %q, want %q or %q", ErrMalformed, p.Type, PEMCertificate, PEMCertificateV2)
	}
	if err != nil {
		return nil, rest, err
	}
	return c, rest, nil
}

func decodePEM(b []byte, typ string) (body, rest []byte, err error) {
	p, rest := pem.Decode(b)
	if p == nil {
		return nil, rest, fmt.Errorf("%w: no PEM block found, want %s", ErrMalformed, typ)
	}
	if p.Type != typ {
		return nil, rest, fmt.Errorf("%w: PEM block is %q, want %q", ErrMalformed, p.Type, typ)
	}
	return p.Bytes, rest, nil
}

func decodeKeyPEM(b []byte, typ string, size int) ([]byte, []byte, error) {
	body, rest, err := decodePEM(b, typ)
	if err != nil {
		return nil, rest, err
	}
	if len(body) != size {
		return nil, rest, fmt.Errorf("%w: %s is %d bytes, want %d", ErrMalformed, typ, len(body), size)
	}
	return body, rest, nil
}

// GenerateX25519 makes a host key pair. The private key is 32 random bytes, unclamped, as
// nebula-cert makes it (X25519 clamps internally).
func GenerateX25519() (pub, priv []byte, err error) {
	priv = make([]byte, keyLen)
	if _, err := rand.Read(priv); err != nil {
		return nil, nil, fmt.Errorf("x25519 key: %w", err)
	}
	pub, err = x25519Public(priv)
	if err != nil {
		return nil, nil, err
	}
	return pub, priv, nil
}

// GenerateEd25519 makes a CA key pair.
func GenerateEd25519() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// MarshalX25519PrivateKey encodes a host private key as PEM.
func MarshalX25519PrivateKey(k []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: PEMX25519PrivateKey, Bytes: k})
}

// UnmarshalX25519PrivateKey decodes a host private key (32 bytes) and returns the rest.
func UnmarshalX25519PrivateKey(b []byte) (key, rest []byte, err error) {
	return decodeKeyPEM(b, PEMX25519PrivateKey, keyLen)
}

// MarshalX25519PublicKey encodes a host public key as PEM (keygen -out-pub, sign -in-pub).
func MarshalX25519PublicKey(k []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: PEMX25519PublicKey, Bytes: k})
}

// UnmarshalX25519PublicKey decodes a host public key (32 bytes) and returns the rest.
func UnmarshalX25519PublicKey(b []byte) (key, rest []byte, err error) {
	return decodeKeyPEM(b, PEMX25519PublicKey, keyLen)
}

// MarshalEd25519PrivateKey encodes a CA private key (64 bytes, seed ‖ public) as PEM.
func MarshalEd25519PrivateKey(k ed25519.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: PEMEd25519PrivateKey, Bytes: k})
}

// UnmarshalEd25519PrivateKey decodes a CA private key and returns the rest.
func UnmarshalEd25519PrivateKey(b []byte) (ed25519.PrivateKey, []byte, error) {
	k, rest, err := decodeKeyPEM(b, PEMEd25519PrivateKey, ed25519.PrivateKeySize)
	if err != nil {
		return nil, rest, err
	}
	return ed25519.PrivateKey(k), rest, nil
}
