package authority

import "github.com/meshnode/meshnode/cert"

// The signed blocklist lives in package cert, so the overlay (which relays it through
// lighthouses) can check it without importing the service. These names keep the
// authority's callers compiling.

// SignedBlocklist is cert.SignedBlocklist.
type SignedBlocklist = cert.SignedBlocklist

// ErrBlocklistInvalid is cert.ErrBlocklistInvalid.
var ErrBlocklistInvalid = cert.ErrBlocklistInvalid

// VerifyBlocklist is cert.VerifyBlocklist.
func VerifyBlocklist(b *SignedBlocklist, pool *cert.Pool) error { return cert.VerifyBlocklist(b, pool) }

// signBlocklist sorts and dedupes fps and signs the list with ca.
func signBlocklist(version uint64, issued int64, fps []string, ca SigningCA) SignedBlocklist {
	return cert.SignBlocklist(version, issued, fps, ca.Cert, ca.Key)
}

func isFingerprint(s string) bool { return cert.IsFingerprint(s) }
