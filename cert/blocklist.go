package cert

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBlocklistInvalid is wrapped by every refusal of a signed blocklist: malformed,
// badly encoded, or not signed by a CA of the pool.
var ErrBlocklistInvalid = errors.New("invalid blocklist")

// ErrBlocklistUnknownCA is wrapped (beside ErrBlocklistInvalid) when the list's signer is
// not in the pool: from the CA service itself that means it signs with a CA this host does
// not trust yet, as in a CA rotation the host slept through.
var ErrBlocklistUnknownCA = errors.New("signed by a CA this host does not trust")

// SignedBlocklist is the revocation list the CA service publishes and any node or
// lighthouse can pass on: every receiver checks it against its own CA pool, so a relay
// needs no trust. Version grows with every revocation, so a receiver keeps the newest it
// has seen.
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

// MaxBlocklistEntries bounds a blocklist anyone will sign, verify or decode. The service
// drops entries once their certificate has expired (give or take its max_clock_skew), bounds
// the certificates of each host, and refuses to publish a list nodes would refuse, so real
// lists stay far below it.
const MaxBlocklistEntries = 1 << 16

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

// IsFingerprint reports whether s is a certificate fingerprint in canonical form: 64
// lowercase hex digits.
func IsFingerprint(s string) bool { return isFingerprint(s) }

func isFingerprint(s string) bool {
	if len(s) != 2*fingerprintLen || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

const fingerprintLen = 32 // SHA-256

// SignBlocklist sorts and dedupes fps and signs the list with the CA's key.
func SignBlocklist(version uint64, issued int64, fps []string, ca *Certificate, key ed25519.PrivateKey) SignedBlocklist {
	fps = slices.Clone(fps)
	slices.Sort(fps)
	fps = slices.Compact(fps)
	b := SignedBlocklist{Version: version, Issued: issued, CA: ca.Fingerprint(), Fingerprints: fps}
	if b.Fingerprints == nil {
		b.Fingerprints = []string{}
	}
	b.Signature = ed25519.Sign(key, b.SignedBytes())
	return b
}

// VerifyBlocklist checks that b is well formed (fingerprints canonical and strictly
// ascending, so the encoding is unique) and signed by a CA in pool. The CA may be expired:
// a blocklist signed by a CA that has since expired still blocks what it lists.
func VerifyBlocklist(b *SignedBlocklist, pool *Pool) error {
	if !isFingerprint(b.CA) {
		return fmt.Errorf("%w: signer %q is not a fingerprint", ErrBlocklistInvalid, b.CA)
	}
	if len(b.Fingerprints) > MaxBlocklistEntries {
		return fmt.Errorf("%w: %d entries (at most %d)", ErrBlocklistInvalid, len(b.Fingerprints), MaxBlocklistEntries)
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
		return fmt.Errorf("%w: %w (%s)", ErrBlocklistInvalid, ErrBlocklistUnknownCA, b.CA)
	}
	if len(b.Signature) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(ca.Details.PublicKey), b.SignedBytes(), b.Signature) {
		return fmt.Errorf("%w: bad signature", ErrBlocklistInvalid)
	}
	return nil
}

// Binary encoding, for relaying a blocklist over the tunnel (where JSON's hex and base64
// would double its size). Every field has a fixed size, so the length is exact:
//
//	"MNBL" | format 1 (1) | version (8) | issued (8, two's complement) | CA fingerprint (32) |
//	entry count (4) | entries (32 each, strictly ascending) | signature (64)
//
// All integers are big endian. Decoding does not check the signature: VerifyBlocklist does.
const (
	blocklistBinMagic  = "MNBL"
	blocklistBinFormat = 1
	blocklistBinFixed  = len(blocklistBinMagic) + 1 + 8 + 8 + fingerprintLen + 4 + ed25519.SignatureSize

	// MaxBlocklistBinary is the largest binary encoding UnmarshalBlocklist accepts.
	MaxBlocklistBinary = blocklistBinFixed + MaxBlocklistEntries*fingerprintLen
)

// MarshalBinary encodes b for relaying. It fails for a list that could not verify (a
// non-canonical fingerprint, a signature of the wrong size, too many entries).
func (b *SignedBlocklist) MarshalBinary() ([]byte, error) {
	if len(b.Fingerprints) > MaxBlocklistEntries {
		return nil, fmt.Errorf("%w: %d entries (at most %d)", ErrBlocklistInvalid, len(b.Fingerprints), MaxBlocklistEntries)
	}
	if len(b.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrBlocklistInvalid, len(b.Signature))
	}
	out := make([]byte, 0, blocklistBinFixed+len(b.Fingerprints)*fingerprintLen)
	out = append(out, blocklistBinMagic...)
	out = append(out, blocklistBinFormat)
	out = binary.BigEndian.AppendUint64(out, b.Version)
	out = binary.BigEndian.AppendUint64(out, uint64(b.Issued))
	var err error
	if out, err = appendFingerprint(out, b.CA); err != nil {
		return nil, fmt.Errorf("%w: signer: %v", ErrBlocklistInvalid, err)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(b.Fingerprints)))
	for i, fp := range b.Fingerprints {
		if out, err = appendFingerprint(out, fp); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBlocklistInvalid, i, err)
		}
	}
	return append(out, b.Signature...), nil
}

func appendFingerprint(out []byte, fp string) ([]byte, error) {
	if !isFingerprint(fp) {
		return nil, errors.New("not a lowercase hex SHA-256 fingerprint")
	}
	return hex.AppendDecode(out, []byte(fp))
}

// UnmarshalBlocklist decodes MarshalBinary's encoding. It reads untrusted bytes: it checks
// every length before reading and refuses trailing bytes, unsorted or duplicate entries.
func UnmarshalBlocklist(data []byte) (*SignedBlocklist, error) {
	if len(data) < blocklistBinFixed || string(data[:len(blocklistBinMagic)]) != blocklistBinMagic {
		return nil, fmt.Errorf("%w: not a binary blocklist", ErrBlocklistInvalid)
	}
	d := data[len(blocklistBinMagic):]
	if d[0] != blocklistBinFormat {
		return nil, fmt.Errorf("%w: unknown format %d", ErrBlocklistInvalid, d[0])
	}
	b := &SignedBlocklist{
		Version: binary.BigEndian.Uint64(d[1:9]),
		Issued:  int64(binary.BigEndian.Uint64(d[9:17])),
		CA:      hex.EncodeToString(d[17 : 17+fingerprintLen]),
	}
	d = d[17+fingerprintLen:]
	count := binary.BigEndian.Uint32(d[:4])
	d = d[4:]
	if count > MaxBlocklistEntries {
		return nil, fmt.Errorf("%w: %d entries (at most %d)", ErrBlocklistInvalid, count, MaxBlocklistEntries)
	}
	if uint64(len(d)) != uint64(count)*fingerprintLen+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes for %d entries", ErrBlocklistInvalid, len(data), count)
	}
	b.Fingerprints = make([]string, count)
	for i := range b.Fingerprints {
		raw := d[i*fingerprintLen : (i+1)*fingerprintLen]
		if i > 0 && string(d[(i-1)*fingerprintLen:i*fingerprintLen]) >= string(raw) {
			return nil, fmt.Errorf("%w: entries not strictly ascending at %d", ErrBlocklistInvalid, i)
		}
		b.Fingerprints[i] = hex.EncodeToString(raw)
	}
	b.Signature = slices.Clone(d[int(count)*fingerprintLen:])
	return b, nil
}
