package handshake

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the length of a data-plane key (the Noise split keys).
const KeySize = 32

// AEAD seals and opens data-plane packets (NEBULA-WIRE §4.1): the nonce is 4 zero bytes
// followed by the header's message counter (big-endian for AES-GCM, little-endian for
// ChaCha20-Poly1305), and the 16 header bytes are the associated data.
//
// An AEAD is safe for concurrent use. It does not track counters or replays; the caller
// must never seal two packets with the same counter.
type AEAD struct {
	aead         cipher.AEAD
	littleEndian bool
	// nonces recycles 12-byte nonce buffers: a nonce passed to cipher.AEAD escapes to the
	// heap (interface call), and a shared buffer would race between goroutines.
	nonces sync.Pool
}

// NewAEAD returns the data-plane AEAD for c keyed with key (KeySize bytes).
func NewAEAD(c Cipher, key []byte) (*AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, want %d", ErrKeySize, len(key), KeySize)
	}
	a := &AEAD{}
	switch c {
	case AESGCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("handshake: aes: %w", err)
		}
		if a.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("handshake: gcm: %w", err)
		}
	case ChaChaPoly:
		var err error
		if a.aead, err = chacha20poly1305.New(key); err != nil {
			return nil, fmt.Errorf("handshake: chacha20poly1305: %w", err)
		}
		a.littleEndian = true
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnknownCipher, c)
	}
	return a, nil
}

func (a *AEAD) nonce(counter uint64) *[12]byte {
	n, _ := a.nonces.Get().(*[12]byte)
	if n == nil {
		n = new([12]byte)
	}
	// Bytes 0..3 stay zero: they are never written.
	if a.littleEndian {
		binary.LittleEndian.PutUint64(n[4:], counter)
	} else {
		binary.BigEndian.PutUint64(n[4:], counter)
	}
	return n
}

// Seal encrypts plaintext with header as associated data and appends the ciphertext and
// tag to dst, like cipher.AEAD.Seal. dst may be plaintext[:0] to encrypt in place.
func (a *AEAD) Seal(dst, header, plaintext []byte, counter uint64) []byte {
	n := a.nonce(counter)
	out := a.aead.Seal(dst, n[:], plaintext, header)
	a.nonces.Put(n)
	return out
}

// Open authenticates and decrypts ciphertext (including the tag) with header as associated
// data and appends the plaintext to dst. dst may be ciphertext[:0] to decrypt in place.
// A failure wraps ErrAuth.
func (a *AEAD) Open(dst, header, ciphertext []byte, counter uint64) ([]byte, error) {
	n := a.nonce(counter)
	out, err := a.aead.Open(dst, n[:], ciphertext, header)
	a.nonces.Put(n)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// Overhead is the tag length that Seal adds (16); the 16-byte header is not counted.
func (a *AEAD) Overhead() int { return a.aead.Overhead() }
