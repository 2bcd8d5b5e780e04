package cert_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

func testFingerprints(n int) []string {
	var fps []string
	for i := range n {
		s := sha256.Sum256([]byte(fmt.Sprint("entry", i)))
		fps = append(fps, hex.EncodeToString(s[:]))
	}
	return fps
}

func TestBlocklistBinaryRoundTripVerifies(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	pool := certtest.Pool(t, ca)
	for _, n := range []int{0, 1, 3, 200} {
		b := cert.SignBlocklist(uint64(n+7), -5+int64(n), testFingerprints(n), ca.Cert, ca.Key)
		enc, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if want := 4 + 1 + 8 + 8 + 32 + 4 + 32*n + 64; len(enc) != want {
			t.Fatalf("%d entries: %d bytes, want %d", n, len(enc), want)
		}
		got, err := cert.UnmarshalBlocklist(enc)
		if err != nil {
			t.Fatalf("%d entries: %v", n, err)
		}
		if !reflect.DeepEqual(*got, b) {
			t.Fatalf("%d entries: round trip changed the list:\n%+v\n%+v", n, *got, b)
		}
		if err := cert.VerifyBlocklist(got, pool); err != nil {
			t.Fatalf("%d entries: decoded list does not verify: %v", n, err)
		}
		if !slices.IsSorted(got.Fingerprints) {
			t.Fatal("entries not sorted")
		}
	}
}

// TestBlocklistBinaryTamperingIsRefused flips every byte of an encoding in turn: each
// change must fail to decode or fail verification, never yield a different valid list.
func TestBlocklistBinaryTamperingIsRefused(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	pool := certtest.Pool(t, ca)
	b := cert.SignBlocklist(9, 1_800_000_000, testFingerprints(3), ca.Cert, ca.Key)
	enc, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		bad := slices.Clone(enc)
		bad[i] ^= 0x01
		got, err := cert.UnmarshalBlocklist(bad)
		if err == nil {
			err = cert.VerifyBlocklist(got, pool)
		}
		if !errors.Is(err, cert.ErrBlocklistInvalid) {
			t.Fatalf("byte %d flipped: %v, want ErrBlocklistInvalid", i, err)
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", enc[:len(enc)-1]},
		{"trailing byte", append(slices.Clone(enc), 0)},
		{"count beyond the data", func() []byte {
			bad := slices.Clone(enc)
			bad[4+1+8+8+32+3]++
			return bad
		}()},
		{"count over the limit", func() []byte {
			bad := slices.Clone(enc)
			copy(bad[4+1+8+8+32:], []byte{0xff, 0xff, 0xff, 0xff})
			return bad
		}()},
		{"duplicate entry", func() []byte {
			bad := slices.Clone(enc)
			off := 4 + 1 + 8 + 8 + 32 + 4
			copy(bad[off+32:off+64], bad[off:off+32])
			return bad
		}()},
	} {
		if _, err := cert.UnmarshalBlocklist(tc.data); !errors.Is(err, cert.ErrBlocklistInvalid) {
			t.Errorf("%s: %v, want ErrBlocklistInvalid", tc.name, err)
		}
	}
	// A list signed by another CA decodes but does not verify.
	other := certtest.NewCA(t, "other")
	forged := cert.SignBlocklist(10, 0, nil, other.Cert, other.Key)
	enc, _ = forged.MarshalBinary()
	got, err := cert.UnmarshalBlocklist(enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyBlocklist(got, pool); !errors.Is(err, cert.ErrBlocklistInvalid) || !errors.Is(err, cert.ErrBlocklistUnknownCA) {
		t.Fatalf("list of an untrusted CA: %v, want ErrBlocklistInvalid and ErrBlocklistUnknownCA", err)
	}
	// A bad signature from a trusted CA is invalid, but not an unknown CA.
	tampered := *got
	tampered.CA = b.CA
	if err := cert.VerifyBlocklist(&tampered, pool); !errors.Is(err, cert.ErrBlocklistInvalid) || errors.Is(err, cert.ErrBlocklistUnknownCA) {
		t.Fatalf("bad signature of a trusted CA: %v", err)
	}
	// A list that could never verify is not encoded.
	b.Signature = b.Signature[:10]
	if _, err := b.MarshalBinary(); err == nil {
		t.Fatal("encoded a list with a short signature")
	}
}

// FuzzUnmarshalBlocklist proves the decoder never panics, that what it accepts re-encodes
// to the same bytes (one encoding per list), and that no fuzzed bytes verify.
func FuzzUnmarshalBlocklist(f *testing.F) {
	ca := certtest.NewCA(f, "ca")
	pool := certtest.Pool(f, ca)
	for _, n := range []int{0, 2} {
		b := cert.SignBlocklist(1, 0, testFingerprints(n), ca.Cert, ca.Key)
		enc, _ := b.MarshalBinary()
		f.Add(enc)
	}
	f.Add([]byte("MNBL"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := cert.UnmarshalBlocklist(data)
		if err != nil {
			if !errors.Is(err, cert.ErrBlocklistInvalid) {
				t.Fatalf("error does not wrap ErrBlocklistInvalid: %v", err)
			}
			return
		}
		again, err := b.MarshalBinary()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted bytes do not re-encode to themselves: %v", err)
		}
		if cert.VerifyBlocklist(b, pool) == nil && !isSeed(data, ca) {
			t.Fatalf("fuzzed blocklist verified: %x", data)
		}
	})
}

// isSeed reports whether data is one of the seeds (which verify, being signed).
func isSeed(data []byte, ca *certtest.CA) bool {
	for _, n := range []int{0, 2} {
		b := cert.SignBlocklist(1, 0, testFingerprints(n), ca.Cert, ca.Key)
		enc, _ := b.MarshalBinary()
		if bytes.Equal(enc, data) {
			return true
		}
	}
	return false
}
