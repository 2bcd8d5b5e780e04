package authority

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshnode/meshnode/cert"
)

// SignedBlocklist is the revocation list a node or lighthouse can pass on and any receiver
// can check against its CA pool. Version grows with every revocation, so a receiver keeps
// the newest it has seen.
//
// The signature is the CA's Ed25519 signature over SignedBytes, a canonical text encoding:
//
//	meshnode-blocklist-v1\n
//	version <decimal>\n
//	issued <unix seconds, decimal>\n
//	ca <signing CA fingerprint, lowercase hex>\n
//	<fingerprint>\n   one line per entry, lowercase hex, strictly ascending
type SignedBlocklist struct {
	Version      uint64   `json:"version"`
	Issued       int64    `json:"issued"`
	CA           string   `json:"ca"`
	Fingerprints []string `json:"fingerprints"`
	Signature    []byte   `json:"signature"`
}

const blocklistMagic = "meshnode-blocklist-v1"

// SignedBytes is the canonical encoding the signature covers.
func (b *SignedBlocklist) SignedBytes() []byte {
	var s strings.Builder
	s.WriteString(blocklistMagic + "\n")
	s.WriteString("version " + strconv.FormatUint(b.Version, 10) + "\n")
	s.WriteString("issued " + strconv.FormatInt(b.Issued, 10) + "\n")
	s.WriteString("ca " + b.CA + "\n")
	for _, fp := range b.Fingerprints {
		s.WriteString(fp + "\n")
	}
	return []byte(s.String())
}

func isFingerprint(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// VerifyBlocklist checks that b is well formed (fingerprints canonical and strictly
// ascending, so the encoding is unique) and signed by a CA in pool. The CA may be expired:
// a blocklist signed by a CA that has since expired still blocks what it lists.
func VerifyBlocklist(b *SignedBlocklist, pool *cert.Pool) error {
	if !isFingerprint(b.CA) {
		return fmt.Errorf("%w: signer %q is not a fingerprint", ErrBlocklistInvalid, b.CA)
	}
	for i, fp := range b.Fingerprints {
		if !isFingerprint(fp) {
			return fmt.Errorf("%w: entry %d is not a lowercase hex SHA-256 fingerprint", ErrBlocklistInvalid, i)
		}
		if i > 0 && b.Fingerprints[i-1] >= fp {
			return fmt.Errorf("%w: entries not strictly ascending at %d", ErrBlocklistInvalid, i)
		}
	}
	ca, ok := pool.CA(b.CA)
	if !ok {
		return fmt.Errorf("%w: signed by unknown CA %s", ErrBlocklistInvalid, b.CA)
	}
	if len(b.Signature) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(ca.Details.PublicKey), b.SignedBytes(), b.Signature) {
		return fmt.Errorf("%w: bad signature", ErrBlocklistInvalid)
	}
	return nil
}

// signBlocklist sorts and dedupes fps and signs the list with ca.
func signBlocklist(version uint64, issued int64, fps []string, ca SigningCA) SignedBlocklist {
	fps = slices.Clone(fps)
	slices.Sort(fps)
	fps = slices.Compact(fps)
	b := SignedBlocklist{Version: version, Issued: issued, CA: ca.Cert.Fingerprint(), Fingerprints: fps}
	if b.Fingerprints == nil {
		b.Fingerprints = []string{}
	}
	b.Signature = ed25519.Sign(ca.Key, b.SignedBytes())
	return b
}
