package handshake

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

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
//
// It keeps the key and builds the cipher at its first use, and Release gives the cipher
// back while the key stays: Go's AES-GCM state is about 830 bytes (both AES key schedules
// and a GHASH table), and a lighthouse's tunnels are idle nearly all the time (issue 18:
// bytes per host).
type AEAD struct {
	key          [KeySize]byte
	cipher       Cipher
	littleEndian bool
	state        atomic.Pointer[aeadState]
}

// aeadState is an AEAD's cipher, built at its first use.
type aeadState struct {
	aead cipher.AEAD
}

// nonces recycles 12-byte nonce buffers: a nonce passed to cipher.AEAD escapes to the heap
// (interface call), and a shared buffer would race between goroutines. One pool for the
// process, not one per AEAD: a pool allocates its per-CPU caches at its first use after
// each collection and the collector walks every pool in use while the world is stopped,
// which with a lighthouse's 200,000 AEADs was most of the garbage an answered query made.
var nonces sync.Pool

// NewAEAD returns the data-plane AEAD for c keyed with key (KeySize bytes).
func NewAEAD(c Cipher, key []byte) (*AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, want %d", ErrKeySize, len(key), KeySize)
	}
	switch c {
	case AESGCM, ChaChaPoly:
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnknownCipher, c)
	}
	a := &AEAD{cipher: c, littleEndian: c == ChaChaPoly}
	copy(a.key[:], key)
	return a, nil
}

// load returns the built cipher, building it at the first call. Two goroutines may both
// build it; one copy is kept and the other is garbage after its call.
func (a *AEAD) load() *aeadState {
	if s := a.state.Load(); s != nil {
		return s
	}
	s := &aeadState{}
	var err error
	switch a.cipher {
	case AESGCM:
		var block cipher.Block
		if block, err = aes.NewCipher(a.key[:]); err == nil {
			s.aead, err = cipher.NewGCM(block)
		}
	default:
		s.aead, err = chacha20poly1305.New(a.key[:])
	}
	if err != nil {
		// NewAEAD checked the key's length and the cipher, which is all these check.
		panic("handshake: building a checked AEAD: " + err.Error())
	}
	// Ours serves this call whether or not it is stored: it is built from the same key.
	// (Loading the winner instead could see nil, if Release ran in between.)
	a.state.CompareAndSwap(nil, s)
	return s
}

// Release drops the cipher state; the next Seal or Open builds it again from the key, so
// it changes nothing but memory and the cost of that next call (a few hundred ns). Safe
// to call while other goroutines seal and open: they finish with the state they loaded.
func (a *AEAD) Release() { a.state.Store(nil) }

// Built says whether the AEAD holds its cipher state now (for tests of the callers).
func (a *AEAD) Built() bool { return a.state.Load() != nil }

func nonce(littleEndian bool, counter uint64) *[12]byte {
	n, _ := nonces.Get().(*[12]byte)
	if n == nil {
		n = new([12]byte)
	}
	// Bytes 0..3 stay zero: they are never written.
	if littleEndian {
		binary.LittleEndian.PutUint64(n[4:], counter)
	} else {
		binary.BigEndian.PutUint64(n[4:], counter)
	}
	return n
}

// Seal encrypts plaintext with header as associated data and appends the ciphertext and
// tag to dst, like cipher.AEAD.Seal. dst may be plaintext[:0] to encrypt in place.
func (a *AEAD) Seal(dst, header, plaintext []byte, counter uint64) []byte {
	s := a.load()
	n := nonce(a.littleEndian, counter)
	out := s.aead.Seal(dst, n[:], plaintext, header)
	nonces.Put(n)
	return out
}

// Open authenticates and decrypts ciphertext (including the tag) with header as associated
// data and appends the plaintext to dst. dst may be ciphertext[:0] to decrypt in place.
// A failure wraps ErrAuth.
func (a *AEAD) Open(dst, header, ciphertext []byte, counter uint64) ([]byte, error) {
	s := a.load()
	n := nonce(a.littleEndian, counter)
	out, err := s.aead.Open(dst, n[:], ciphertext, header)
	nonces.Put(n)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// Overhead is the tag length that Seal adds (16); the 16-byte header is not counted.
func (a *AEAD) Overhead() int { return 16 }
