package api

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Token is what an enrollment token carries: where the service is, how to recognise it, and
// the single-use secret. Written as one string, "mesh1.<url>.<pin>.<secret>" with each part
// base64url without padding, so `meshnode enroll -token T` needs nothing else.
type Token struct {
	// URL is the service's https://host:port, or several separated by commas (replicas):
	// the node tries them in turn.
	URL    string
	Pin    []byte // SHA-256 of the service's TLS certificate (DER)
	Secret []byte
}

const tokenPrefix = "mesh1"

// SecretSize is the size of a token secret: 256 bits, never stored, only its hash.
const SecretSize = 32

var b64 = base64.RawURLEncoding

// String formats the token.
func (t Token) String() string {
	return strings.Join([]string{tokenPrefix, b64.EncodeToString([]byte(t.URL)), b64.EncodeToString(t.Pin), b64.EncodeToString(t.Secret)}, ".")
}

// ParseToken reads a token string; errors wrap ErrTokenFormat and never quote the secret.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("%w: want %s.<url>.<pin>.<secret>", ErrTokenFormat, tokenPrefix)
	}
	u, err1 := b64.DecodeString(parts[1])
	pin, err2 := b64.DecodeString(parts[2])
	secret, err3 := b64.DecodeString(parts[3])
	if err1 != nil || err2 != nil || err3 != nil {
		return Token{}, fmt.Errorf("%w: bad base64url", ErrTokenFormat)
	}
	if len(pin) != sha256.Size || len(secret) != SecretSize {
		return Token{}, fmt.Errorf("%w: pin or secret has the wrong length", ErrTokenFormat)
	}
	if err := CheckServiceURLs(string(u)); err != nil {
		return Token{}, fmt.Errorf("%w: %w", ErrTokenFormat, err)
	}
	return Token{URL: string(u), Pin: pin, Secret: secret}, nil
}

// CheckServiceURLs checks a comma-separated list of https://host[:port] URLs.
func CheckServiceURLs(s string) error {
	for _, u := range strings.Split(s, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			return fmt.Errorf("service URL %q is not https://host[:port]", u)
		}
	}
	return nil
}
