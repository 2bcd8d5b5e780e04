// Package api is the CA service's HTTP API as both ends see it: the JSON bodies, the error
// codes and their sentinel errors, the enrollment token's format, the renewal request's MAC
// and the limits a node relies on. The service (package authority) and the node (package
// client, nodekeys) import it, so a node links neither the service nor its store.
package api

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// Byte fields of the JSON bodies are base64 (encoding/json's default); certificates and
// bundles are PEM text.

// MaxResponseSize is the most a node's client reads of one answer from the service. The
// service never publishes a blocklist whose JSON is larger: nodes would refuse it.
const MaxResponseSize = 1 << 20

// MaxBlocklistWait is the longest blocklist long-poll a request may ask for: under the 60 s
// idle timeouts of common proxies and NATs, so a held request is not cut silently.
const MaxBlocklistWait = 55 * time.Second

// Lighthouse is one lighthouse as a node's static_host_map needs it.
type Lighthouse struct {
	VpnIP netip.Addr `json:"vpn_ip" yaml:"vpn_ip"`
	Addrs []string   `json:"addrs" yaml:"addrs"` // host:port on the underlay
}

// EnrollRequest is the body of POST /v1/enroll: the token's secret and the host's new
// public key. The private key never leaves the host.
type EnrollRequest struct {
	Secret    []byte `json:"secret"`
	PublicKey []byte `json:"public_key"`
}

// EnrollResponse answers a successful enrollment.
type EnrollResponse struct {
	Cert        string       `json:"cert"`
	CABundle    string       `json:"ca_bundle"`
	Lighthouses []Lighthouse `json:"lighthouses"`
	ServiceKey  []byte       `json:"service_key"`
}

// RenewResponse answers a successful renewal (the request body is a RenewRequest).
type RenewResponse struct {
	Cert     string `json:"cert"`
	CABundle string `json:"ca_bundle"`
}

// HealthResponse is GET /v1/health.
type HealthResponse struct {
	Status           string   `json:"status"`
	BlocklistVersion uint64   `json:"blocklist_version"`
	Warnings         []string `json:"warnings,omitempty"`
}

// ErrorResponse is the body of every non-2xx answer. Code names the sentinel error, so the
// client can return an error that errors.Is recognises.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// apiErrors maps sentinels to codes and HTTP statuses; the first match wins.
var apiErrors = []struct {
	err    error
	code   string
	status int
}{
	{ErrTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	{ErrMalformed, "malformed", http.StatusBadRequest},
	{ErrBadKey, "bad_key", http.StatusBadRequest},
	{ErrSameKey, "same_key", http.StatusBadRequest},
	{ErrTokenFormat, "token_format", http.StatusBadRequest},
	{ErrRateLimited, "rate_limited", http.StatusTooManyRequests},
	{ErrTokenUnknown, "token_unknown", http.StatusForbidden},
	{ErrTokenUsed, "token_used", http.StatusForbidden},
	{ErrTokenExpired, "token_expired", http.StatusForbidden},
	{ErrRevoked, "revoked", http.StatusForbidden},
	{ErrBadProof, "bad_proof", http.StatusForbidden},
	{ErrReplay, "replay", http.StatusForbidden},
	{ErrStale, "stale", http.StatusForbidden},
	{ErrFork, "fork", http.StatusForbidden},
	{ErrRenewLimited, "renew_limited", http.StatusTooManyRequests},
	{ErrBlocklistTooLarge, "blocklist_too_large", http.StatusServiceUnavailable},
	{ErrCertSuperseded, "cert_superseded", http.StatusForbidden},
	{ErrCertInvalid, "cert_invalid", http.StatusForbidden},
	{ErrNoActiveCA, "no_active_ca", http.StatusServiceUnavailable},
	{ErrBusy, "busy", http.StatusServiceUnavailable},
	// Admin operations (the admin socket).
	{ErrNameTaken, "name_taken", http.StatusConflict},
	{ErrIPTaken, "ip_taken", http.StatusConflict},
	{ErrNoFreeIP, "no_free_ip", http.StatusConflict},
	{ErrCIDRUnknown, "cidr_unknown", http.StatusNotFound},
	{ErrCIDRInvalid, "cidr_invalid", http.StatusBadRequest},
	{ErrIPOutsideCIDR, "ip_outside_cidr", http.StatusBadRequest},
	{ErrInvalidName, "invalid_name", http.StatusBadRequest},
	{ErrNotFound, "not_found", http.StatusNotFound},
}

// ErrorCode returns the API code and HTTP status for err; unknown errors are internal.
func ErrorCode(err error) (code string, status int) {
	for _, e := range apiErrors {
		if errors.Is(err, e.err) {
			return e.code, e.status
		}
	}
	return "internal", http.StatusInternalServerError
}

// ErrorForCode is the sentinel behind an API code, or nil for an unknown code.
func ErrorForCode(code string) error {
	for _, e := range apiErrors {
		if e.code == code {
			return e.err
		}
	}
	return nil
}

// RenewRequest asks for a new certificate for the identity of Cert, with PublicKey. MAC
// proves that the sender holds Cert's private key: it is HMAC-SHA256 keyed by
// renewKey(X25519(cert key, service key)) over the canonical encoding of every other field
// (see macInput), so a request cannot be altered, and Nonce plus a per-host Counter that
// must strictly increase mean it cannot be replayed either.
type RenewRequest struct {
	Cert      []byte `json:"cert"`       // PEM of the current certificate
	PublicKey []byte `json:"public_key"` // the new X25519 public key
	Nonce     []byte `json:"nonce"`      // 16 to 64 random bytes
	Counter   uint64 `json:"counter"`    // greater than the host's last accepted counter
	Time      int64  `json:"time"`       // unix seconds, within MaxClockSkew of the service
	MAC       []byte `json:"mac"`
}

const renewLabel = "meshnode-renew-v1"

// Nonce sizes a renewal request may carry.
const (
	MinNonceSize = 16
	MaxNonceSize = 64
)

func macInput(r *RenewRequest, servicePub []byte) []byte {
	var b []byte
	field := func(v []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	field([]byte(renewLabel))
	field(servicePub)
	field(r.Cert)
	field(r.PublicKey)
	field(r.Nonce)
	b = binary.BigEndian.AppendUint64(b, r.Counter)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	return b
}

// RenewMAC is the MAC of r under the X25519 shared secret of the node's and the service's
// keys: it derives a key from the secret (never used raw) and MACs the request. The
// service compares it with r.MAC (hmac.Equal).
func RenewMAC(shared []byte, r *RenewRequest, servicePub []byte) []byte {
	k := hmac.New(sha256.New, shared)
	k.Write([]byte(renewLabel))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(macInput(r, servicePub))
	return m.Sum(nil)
}

// SignRenewRequest sets r.MAC using the node's current private key and the service's public
// key (both X25519).
func SignRenewRequest(r *RenewRequest, nodeKey, servicePub []byte) error {
	priv, err := ecdh.X25519().NewPrivateKey(nodeKey)
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	pub, err := ecdh.X25519().NewPublicKey(servicePub)
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	r.MAC = RenewMAC(shared, r, servicePub)
	return nil
}
