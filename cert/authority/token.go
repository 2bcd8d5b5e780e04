package authority

import (
	"crypto/sha256"
	"encoding/hex"
)

// tokenHash is how the store knows a token: hex SHA-256 of the secret. A 256-bit random
// secret needs no salt or slow hash, and lookup by hash keeps comparisons off the secret.
func tokenHash(secret []byte) string {
	h := sha256.Sum256(secret)
	return hex.EncodeToString(h[:])
}

// tokenID is a short, non-secret name for a token in the audit log and logs.
func tokenID(hash string) string { return hash[:12] }
