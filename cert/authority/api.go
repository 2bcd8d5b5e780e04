package authority

import (
	"errors"
	"net/http"
)

// The JSON bodies of the HTTP API, shared by Server and package client. Byte fields are
// base64 (encoding/json's default); certificates and bundles are PEM text.

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

// ErrRateLimited is returned when a source sends enrollments too fast.
var ErrRateLimited = errors.New("too many requests")

// ErrTooLarge is a request body over the size limit.
var ErrTooLarge = errors.New("request body too large")

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
