package handshake

import (
	"fmt"

	"github.com/flynn/noise"
)

// Cipher is the network-wide AEAD choice (Nebula's `cipher` config key). It is not
// negotiated: both sides must agree, or the initiator cannot read msg 2.
type Cipher uint8

const (
	// AESGCM is AES-256-GCM, Nebula's default.
	AESGCM Cipher = iota
	// ChaChaPoly is ChaCha20-Poly1305 (`cipher: chachapoly`).
	ChaChaPoly
)

// ParseCipher maps a Nebula config value to a Cipher: "" and "aes" select AESGCM,
// "chachapoly" selects ChaChaPoly.
func ParseCipher(s string) (Cipher, error) {
	switch s {
	case "", "aes":
		return AESGCM, nil
	case "chachapoly":
		return ChaChaPoly, nil
	}
	return 0, fmt.Errorf("%w: %q (want aes or chachapoly)", ErrUnknownCipher, s)
}

// String returns the config spelling of c.
func (c Cipher) String() string {
	switch c {
	case AESGCM:
		return "aes"
	case ChaChaPoly:
		return "chachapoly"
	}
	return fmt.Sprintf("Cipher(%d)", uint8(c))
}

// noiseCipher is c's Noise cipher function; the suite is built per handshake around its
// own DH function (dh.go).
func (c Cipher) noiseCipher() (noise.CipherFunc, error) {
	switch c {
	case AESGCM:
		return noise.CipherAESGCM, nil
	case ChaChaPoly:
		return noise.CipherChaChaPoly, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrUnknownCipher, c)
}
