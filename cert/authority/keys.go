package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// TLSIdentity is the service's self-signed TLS certificate. Clients trust it by Pin, the
// SHA-256 of its DER, which tokens and node configs carry: no public PKI is involved.
type TLSIdentity struct {
	Cert tls.Certificate
	Pin  []byte
}

// PinString is the pin in lowercase hex, as configs write it.
func (id TLSIdentity) PinString() string { return hex.EncodeToString(id.Pin) }

// ParsePin reads a pin in hex.
func ParsePin(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("TLS pin must be %d hex digits (SHA-256 of the certificate)", 2*sha256.Size)
	}
	return b, nil
}

// LoadOrCreateTLSIdentity reads the certificate and key PEM at path, or makes an ECDSA P-256
// pair for the given host names and IPs (valid ten years) and writes it there (0600) on first
// start. The pin must not change between restarts, or every token and node config breaks.
func LoadOrCreateTLSIdentity(path string, hosts []string, now time.Time) (TLSIdentity, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if b, err = newTLSPEM(hosts, now); err != nil {
			return TLSIdentity{}, err
		}
		if err := cert.WriteFileAtomic(path, b, 0o600, false); err != nil {
			return TLSIdentity{}, err
		}
	} else if err != nil {
		return TLSIdentity{}, fmt.Errorf("TLS identity: %w", err)
	}
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		return TLSIdentity{}, fmt.Errorf("TLS identity %s: %w", path, err)
	}
	pin := sha256.Sum256(c.Certificate[0])
	return TLSIdentity{Cert: c, Pin: pin[:]}, nil
}

func newTLSPEM(hosts []string, now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "meshnode CA service"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     hosts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})...), nil
}

// LoadOrCreateServiceKey reads the service's X25519 renewal key at path, or makes one and
// writes it (0600). Like the TLS pin, it must survive restarts: nodes hold its public half.
func LoadOrCreateServiceKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := cert.GenerateX25519()
		if err != nil {
			return nil, err
		}
		if err := cert.WriteFileAtomic(path, cert.MarshalX25519PrivateKey(priv), 0o600, false); err != nil {
			return nil, err
		}
		return priv, nil
	} else if err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	k, _, err := cert.UnmarshalX25519PrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("service key %s: %w", path, err)
	}
	return k, nil
}
