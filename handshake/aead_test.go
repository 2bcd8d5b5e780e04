package handshake

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"testing"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

func testKey(seed byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func testHeader(counter uint64) []byte {
	h := []byte{0x11, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(h[8:], counter)
	return h
}

func TestParseCipher(t *testing.T) {
	tests := []struct {
		in      string
		want    Cipher
		wantErr bool
	}{
		{"", AESGCM, false},
		{"aes", AESGCM, false},
		{"chachapoly", ChaChaPoly, false},
		{"AES", 0, true},
		{"chacha", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseCipher(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrUnknownCipher) {
				t.Errorf("ParseCipher(%q) error = %v, want ErrUnknownCipher", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCipher(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if tt.in != "" && got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
}

// The nonce layout is checked against two independent references: the bare cipher with a
// hand-built nonce, and flynn/noise's CipherState, which uses the same layouts.
func TestAEADNonceLayoutMatchesReference(t *testing.T) {
	key := testKey(1)
	counters := []uint64{0, 1, 3, 255, 256, 1<<32 + 5, 0x0102030405060708, ^uint64(0) - 1}
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		t.Run(c.String(), func(t *testing.T) {
			a, err := NewAEAD(c, key)
			if err != nil {
				t.Fatal(err)
			}
			var bare cipher.AEAD
			var suite noise.CipherSuite
			if c == AESGCM {
				block, _ := aes.NewCipher(key)
				bare, _ = cipher.NewGCM(block)
				suite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)
			} else {
				bare, _ = chacha20poly1305.New(key)
				suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)
			}
			for _, n := range counters {
				hdr, pt := testHeader(n), []byte("inner ip packet")
				got := a.Seal(nil, hdr, pt, n)

				nonce := make([]byte, 12)
				if c == AESGCM {
					binary.BigEndian.PutUint64(nonce[4:], n)
				} else {
					binary.LittleEndian.PutUint64(nonce[4:], n)
				}
				if want := bare.Seal(nil, nonce, pt, hdr); !bytes.Equal(got, want) {
					t.Fatalf("counter %d: Seal differs from bare cipher with hand-built nonce", n)
				}
				cs := noise.UnsafeNewCipherState(suite, [32]byte(key), n)
				want, err := cs.Encrypt(nil, hdr, pt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("counter %d: Seal differs from flynn/noise CipherState", n)
				}
			}
		})
	}
}

func TestAEADOpenRejectsTampering(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		t.Run(c.String(), func(t *testing.T) {
			a, _ := NewAEAD(c, testKey(9))
			const n = 3
			hdr := testHeader(n)
			ct := a.Seal(nil, hdr, []byte("payload"), n)
			if pt, err := a.Open(nil, hdr, ct, n); err != nil || string(pt) != "payload" {
				t.Fatalf("Open = %q, %v", pt, err)
			}
			cases := []struct {
				name    string
				hdr, ct []byte
				counter uint64
			}{
				{"wrong counter", hdr, ct, n + 1},
				{"header byte flipped", flip(hdr, 1), ct, n},
				{"header counter differs from nonce", testHeader(n + 1), ct, n},
				{"ciphertext bit flipped", hdr, flip(ct, 0), n},
				{"tag bit flipped", hdr, flip(ct, len(ct)-1), n},
				{"shorter than tag", hdr, ct[:a.Overhead()-1], n},
				{"empty", hdr, nil, n},
			}
			for _, tc := range cases {
				if _, err := a.Open(nil, tc.hdr, tc.ct, tc.counter); !errors.Is(err, ErrAuth) {
					t.Errorf("%s: Open error = %v, want ErrAuth", tc.name, err)
				}
			}
			other, _ := NewAEAD(c, testKey(10))
			if _, err := other.Open(nil, hdr, ct, n); !errors.Is(err, ErrAuth) {
				t.Errorf("wrong key: Open error = %v, want ErrAuth", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x01
	return c
}

func TestAEADWorksInPlace(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		t.Run(c.String(), func(t *testing.T) {
			a, _ := NewAEAD(c, testKey(3))
			msg := bytes.Repeat([]byte{0x45}, 1400)
			buf := make([]byte, len(msg), len(msg)+a.Overhead())
			copy(buf, msg)
			hdr := testHeader(77)
			ct := a.Seal(buf[:0], hdr, buf, 77)
			if &ct[0] != &buf[0] || len(ct) != len(msg)+a.Overhead() {
				t.Fatal("Seal did not encrypt in place")
			}
			pt, err := a.Open(ct[:0], hdr, ct, 77)
			if err != nil {
				t.Fatal(err)
			}
			if &pt[0] != &buf[0] || !bytes.Equal(pt, msg) {
				t.Fatal("Open did not decrypt in place to the original")
			}
		})
	}
}

// The overlay keeps the header in front of the payload in one buffer and seals by
// appending to the header: dst = header, plaintext right behind it.
func TestAEADWorksWithHeaderInSameBuffer(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		t.Run(c.String(), func(t *testing.T) {
			a, _ := NewAEAD(c, testKey(5))
			msg := bytes.Repeat([]byte{0x60}, 300)
			buf := make([]byte, HeaderLen+len(msg)+a.Overhead())
			copy(buf, testHeader(12))
			copy(buf[HeaderLen:], msg)
			hdr := buf[:HeaderLen]
			pkt := a.Seal(hdr, hdr, buf[HeaderLen:HeaderLen+len(msg)], 12)
			if len(pkt) != len(buf) || &pkt[0] != &buf[0] {
				t.Fatal("sealed packet is not header || ciphertext in the same buffer")
			}
			if !bytes.Equal(pkt[:HeaderLen], testHeader(12)) {
				t.Fatal("header was overwritten")
			}
			pt, err := a.Open(pkt[HeaderLen:HeaderLen], pkt[:HeaderLen], pkt[HeaderLen:], 12)
			if err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("Open = %v", err)
			}
		})
	}
}

func TestAEADSealOpenDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		a, _ := NewAEAD(c, testKey(4))
		buf := make([]byte, 1400+a.Overhead())
		hdr := testHeader(5)
		var ctr uint64
		allocs := testing.AllocsPerRun(200, func() {
			ctr++
			ct := a.Seal(buf[:0], hdr, buf[:1400], ctr)
			if _, err := a.Open(ct[:0], hdr, ct, ctr); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocs per Seal+Open, want 0", c, allocs)
		}
	}
}

func TestNewAEADRejectsBadInput(t *testing.T) {
	if _, err := NewAEAD(AESGCM, make([]byte, 16)); !errors.Is(err, ErrKeySize) {
		t.Errorf("16-byte key: %v, want ErrKeySize", err)
	}
	if _, err := NewAEAD(Cipher(9), make([]byte, 32)); !errors.Is(err, ErrUnknownCipher) {
		t.Errorf("cipher 9: %v, want ErrUnknownCipher", err)
	}
	a, _ := NewAEAD(ChaChaPoly, make([]byte, 32))
	if a.Overhead() != 16 {
		t.Errorf("Overhead = %d, want 16", a.Overhead())
	}
}

func benchCiphers(b *testing.B, run func(b *testing.B, c Cipher)) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		b.Run(c.String(), func(b *testing.B) { run(b, c) })
	}
}

const benchPacket = 1400

func BenchmarkSeal(b *testing.B) {
	benchCiphers(b, func(b *testing.B, c Cipher) {
		a, _ := NewAEAD(c, testKey(1))
		buf := make([]byte, benchPacket+a.Overhead())
		hdr := testHeader(0)
		b.SetBytes(benchPacket)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			a.Seal(buf[:0], hdr, buf[:benchPacket], uint64(i))
		}
	})
}

func BenchmarkOpen(b *testing.B) {
	benchCiphers(b, func(b *testing.B, c Cipher) {
		a, _ := NewAEAD(c, testKey(1))
		hdr := testHeader(3)
		ct := a.Seal(nil, hdr, make([]byte, benchPacket), 3)
		buf := make([]byte, len(ct))
		b.SetBytes(benchPacket)
		b.ReportAllocs()
		for b.Loop() {
			copy(buf, ct)
			if _, err := a.Open(buf[:0], hdr, buf, 3); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBareSeal and BenchmarkBareOpen are the floor: the stdlib/x/crypto AEAD with a
// fixed nonce, to show what the nonce handling in AEAD costs on top.
func BenchmarkBareSeal(b *testing.B) {
	benchCiphers(b, func(b *testing.B, c Cipher) {
		bare := bareAEAD(c, testKey(1))
		buf := make([]byte, benchPacket+bare.Overhead())
		hdr, nonce := testHeader(0), make([]byte, 12)
		b.SetBytes(benchPacket)
		b.ReportAllocs()
		for b.Loop() {
			bare.Seal(buf[:0], nonce, buf[:benchPacket], hdr)
		}
	})
}

func BenchmarkBareOpen(b *testing.B) {
	benchCiphers(b, func(b *testing.B, c Cipher) {
		bare := bareAEAD(c, testKey(1))
		hdr, nonce := testHeader(3), make([]byte, 12)
		ct := bare.Seal(nil, nonce, make([]byte, benchPacket), hdr)
		buf := make([]byte, len(ct))
		b.SetBytes(benchPacket)
		b.ReportAllocs()
		for b.Loop() {
			copy(buf, ct)
			if _, err := bare.Open(buf[:0], nonce, buf, hdr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func bareAEAD(c Cipher, key []byte) cipher.AEAD {
	if c == AESGCM {
		block, _ := aes.NewCipher(key)
		g, _ := cipher.NewGCM(block)
		return g
	}
	a, _ := chacha20poly1305.New(key)
	return a
}

// Several queue goroutines seal and open with one tunnel's AEAD at once (run with -race).
func TestAEADIsSafeForConcurrentUse(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		a, _ := NewAEAD(c, testKey(6))
		done := make(chan error, 4)
		for g := range 4 {
			go func() {
				buf := make([]byte, 64+a.Overhead())
				for i := range 200 {
					n := uint64(g*1000 + i)
					hdr := testHeader(n)
					msg := bytes.Repeat([]byte{byte(n)}, 64)
					copy(buf, msg)
					ct := a.Seal(buf[:0], hdr, buf[:64], n)
					pt, err := a.Open(ct[:0], hdr, ct, n)
					if err != nil || !bytes.Equal(pt, msg) {
						done <- errors.New("concurrent round trip failed")
						return
					}
				}
				done <- nil
			}()
		}
		for range 4 {
			if err := <-done; err != nil {
				t.Fatalf("%v: %v", c, err)
			}
		}
	}
}

// The cipher state is built at the first use, once, even when goroutines race for it: an
// AEAD a lighthouse never sends with keeps its 32-byte key and nothing else.
func TestAEADBuildsItsCipherAtFirstUse(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		key := make([]byte, KeySize)
		key[0] = 7
		seal, err := NewAEAD(c, key)
		if err != nil {
			t.Fatal(err)
		}
		open, _ := NewAEAD(c, key)
		if seal.state.Load() != nil || open.state.Load() != nil {
			t.Fatalf("%v: cipher built before any use", c)
		}
		hdr := make([]byte, HeaderLen)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ct := seal.Seal(nil, hdr, []byte("payload"), uint64(10+i))
				if pt, err := open.Open(nil, hdr, ct, uint64(10+i)); err != nil || string(pt) != "payload" {
					t.Errorf("%v: open = %q, %v", c, pt, err)
				}
			}()
		}
		wg.Wait()
		first := seal.state.Load()
		if first == nil {
			t.Fatalf("%v: no cipher after use", c)
		}
		seal.Seal(nil, hdr, nil, 99)
		if seal.state.Load() != first {
			t.Errorf("%v: cipher built again", c)
		}
	}
}

// A released AEAD rebuilds its cipher from the key: what it seals and opens is unchanged,
// also while goroutines seal and open during releases.
func TestAEADReleaseKeepsWorking(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		key := testKey(3)
		seal, _ := NewAEAD(c, key)
		open, _ := NewAEAD(c, key)
		hdr := make([]byte, HeaderLen)
		want := seal.Seal(nil, hdr, []byte("same bytes"), 5)
		seal.Release()
		if seal.state.Load() != nil {
			t.Fatalf("%v: state kept after Release", c)
		}
		if got := seal.Seal(nil, hdr, []byte("same bytes"), 5); !bytes.Equal(got, want) {
			t.Fatalf("%v: sealed %x after a release, %x before", c, got, want)
		}
		var wg sync.WaitGroup
		// Releases between every use, from 8 goroutines, make a build that loses its race
		// to another and then meets a release likely (a load that could return nil did).
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 2000 {
					ctr := uint64(g*10000 + i)
					ct := seal.Seal(nil, hdr, []byte("x"), ctr)
					if _, err := open.Open(nil, hdr, ct, ctr); err != nil {
						t.Errorf("%v: open after releases: %v", c, err)
						return
					}
					seal.Release()
					open.Release()
				}
			}()
		}
		wg.Wait()
		bad := append([]byte(nil), want...)
		bad[len(bad)-1] ^= 1
		open.Release()
		if _, err := open.Open(nil, hdr, bad, 5); !errors.Is(err, ErrAuth) {
			t.Errorf("%v: a forged packet after a release: %v, want ErrAuth", c, err)
		}
	}
}

// BenchmarkAEADRebuild is what the first Seal or Open after a Release costs more.
func BenchmarkAEADRebuild(b *testing.B) {
	a, _ := NewAEAD(AESGCM, testKey(1))
	hdr := make([]byte, HeaderLen)
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		a.Release()
		a.Seal(buf[:0], hdr, nil, 1)
	}
}

// A lighthouse holds 200,000 AEADs and uses each now and then. Using many built AEADs
// after a collection must not allocate per AEAD: one pool per AEAD allocated its per-CPU
// caches at each one's first use after every collection (issue 18: most of an answered
// query's garbage at 100k hosts, and the collector ran that much more often).
func TestManyAEADsAfterACollectionDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	const n = 2000
	as := make([]*AEAD, n)
	buf := make([]byte, 64+16)
	hdr := testHeader(5)
	for i := range as {
		as[i], _ = NewAEAD(AESGCM, testKey(byte(i)))
		as[i].Seal(buf[:0], hdr, buf[:64], 1) // builds its cipher state
	}
	runtime.GC()
	i := 0
	allocs := testing.AllocsPerRun(n-1, func() {
		as[i].Seal(buf[:0], hdr, buf[:64], 2)
		i++
	})
	if allocs != 0 {
		t.Errorf("%v allocs per Seal on a different built AEAD after a collection, want 0", allocs)
	}
}
