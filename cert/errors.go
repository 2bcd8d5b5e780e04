package cert

import "errors"

// Sentinel errors. Verification failures wrap one of these, and their messages read like
// Nebula 1.6.1's so that logs and the CLI say the same thing as nebula-cert.
var (
	ErrBlocked           = errors.New("certificate has been blocked")
	ErrNoIssuer          = errors.New("no issuer in certificate")
	ErrUnknownCA         = errors.New("could not find ca for the certificate")
	ErrRootExpired       = errors.New("root certificate is expired")
	ErrExpired           = errors.New("certificate is expired")
	ErrSignatureMismatch = errors.New("certificate signature did not match")
	ErrNotCA             = errors.New("certificate is not a CA")
	ErrNotSelfSigned     = errors.New("certificate is not self-signed")
	// ErrConstraint covers groups, IPs, subnets and validity outside the signing CA's.
	ErrConstraint = errors.New("certificate violates the constraints of its signing CA")

	// ErrMalformed is wrapped by every decoding failure of certificate or key bytes.
	ErrMalformed = errors.New("malformed certificate")
	// ErrKeyMismatch means a private key does not belong to the certificate's public key.
	ErrKeyMismatch = errors.New("key does not match the certificate's public key")
	// ErrInvalid means a certificate cannot be encoded (for example an IPv6 address).
	ErrInvalid = errors.New("invalid certificate details")
	// ErrUnknownVersion is a certificate version other than 1 and 2.
	ErrUnknownVersion = errors.New("certificate version unrecognized")
	// ErrUnsupportedCurve: a v2 certificate on P-256, which Nebula 1.10+ can make and
	// meshnode does not support (Curve25519 only).
	ErrUnsupportedCurve = errors.New("P-256 certificates are not supported (Curve25519 only)")
)

// detailError carries a message of its own (Nebula's exact text, often with a value in it)
// while still matching its sentinel with errors.Is.
type detailError struct {
	msg      string
	sentinel error
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.sentinel }

func withMsg(sentinel error, msg string) error { return &detailError{msg: msg, sentinel: sentinel} }
