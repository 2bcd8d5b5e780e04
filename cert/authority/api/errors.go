package api

import "errors"

// Errors of the service's operations, each with its API code (api.go), so errors.Is works on
// both sides of the wire. Package authority re-exports them under the same names.
var (
	// ErrTokenUnknown covers tokens never issued, forged, for another network, or superseded
	// by a newer invite for the same name.
	ErrTokenUnknown = errors.New("unknown enrollment token")
	ErrTokenUsed    = errors.New("enrollment token already used")
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenFormat  = errors.New("malformed enrollment token")

	ErrRevoked  = errors.New("host is revoked")
	ErrNotFound = errors.New("no such host or certificate")

	// ErrBadKey is a public key that is not a usable X25519 key (wrong size, low order).
	ErrBadKey = errors.New("invalid public key")
	// ErrSameKey refuses a renewal that keeps the old key pair.
	ErrSameKey = errors.New("renewal must use a new key pair")
	// ErrBadProof means the request's MAC does not prove possession of the cert's key.
	ErrBadProof = errors.New("proof of possession failed")
	// ErrReplay is a renewal whose nonce was seen or whose counter did not increase.
	ErrReplay = errors.New("replayed renewal request")
	// ErrStale is a renewal request whose time is too far from the service's clock.
	ErrStale = errors.New("renewal request time out of range")
	// ErrCertInvalid wraps the cert package's reason (expired, unknown CA, ...).
	ErrCertInvalid = errors.New("certificate not valid for renewal")
	// ErrCertSuperseded was the answer to a renewal from an old certificate of the host;
	// the service now answers ErrFork. Kept so the API code still maps to an error.
	ErrCertSuperseded = errors.New("certificate superseded by a newer one")
	ErrMalformed      = errors.New("malformed request")
	// ErrFork is a renewal from a certificate the host has already renewed, other than a
	// retry for the same new key: two holders of the host's key. The audit log records it.
	ErrFork = errors.New("renewal from a superseded certificate (a possible copy of the host's key)")
	// ErrRenewLimited is a renewal too early in the certificate's life, or one that would
	// give the host more than MaxHostCerts valid certificates; asking later succeeds.
	ErrRenewLimited = errors.New("renewal refused for now")
	// ErrBlocklistTooLarge means the blocklist would be refused by nodes, so it is not
	// published; the service logs and audits an alarm.
	ErrBlocklistTooLarge = errors.New("blocklist too large for nodes to accept")

	ErrNoActiveCA = errors.New("no unexpired CA with a key to sign with")
)

// ErrRateLimited is returned when a source sends enrollments too fast.
var ErrRateLimited = errors.New("too many requests")

// ErrTooLarge is a request body over the size limit.
var ErrTooLarge = errors.New("request body too large")

// ErrBusy refuses a blocklist wait when the service holds as many as it allows already; the
// client retries later and meanwhile relies on its interval fetch.
var ErrBusy = errors.New("too many waiting blocklist requests; retry later")

// Inventory errors (admin operations).
var (
	ErrCIDRUnknown   = errors.New("no such CIDR")
	ErrCIDRInvalid   = errors.New("invalid CIDR")
	ErrNameTaken     = errors.New("name already taken")
	ErrIPTaken       = errors.New("IP already taken")
	ErrNoFreeIP      = errors.New("no free IP left in CIDR")
	ErrIPOutsideCIDR = errors.New("IP is not usable in CIDR")
	ErrInvalidName   = errors.New("invalid name")
)
