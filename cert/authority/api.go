package authority

import "github.com/meshnode/meshnode/cert/authority/api"

// The HTTP API's bodies, error codes and token format live in package api, which nodes
// import without linking the service; these names keep the service's callers compiling.

type (
	EnrollRequest  = api.EnrollRequest
	EnrollResponse = api.EnrollResponse
	RenewRequest   = api.RenewRequest
	RenewResponse  = api.RenewResponse
	HealthResponse = api.HealthResponse
	ErrorResponse  = api.ErrorResponse
	Lighthouse     = api.Lighthouse
	Token          = api.Token
)

// Limits nodes rely on (api.MaxResponseSize, api.MaxBlocklistWait).
const (
	MaxResponseSize  = api.MaxResponseSize
	MaxBlocklistWait = api.MaxBlocklistWait
	MinNonceSize     = api.MinNonceSize
	MaxNonceSize     = api.MaxNonceSize
)

// secretSize is the size of a token secret (api.SecretSize).
const secretSize = api.SecretSize

// ErrorCode returns the API code and HTTP status for err; unknown errors are internal.
func ErrorCode(err error) (code string, status int) { return api.ErrorCode(err) }

// ErrorForCode is the sentinel behind an API code, or nil for an unknown code.
func ErrorForCode(code string) error { return api.ErrorForCode(code) }

// ParseToken reads a token string (api.ParseToken).
func ParseToken(s string) (Token, error) { return api.ParseToken(s) }

// SignRenewRequest sets r.MAC (api.SignRenewRequest).
func SignRenewRequest(r *RenewRequest, nodeKey, servicePub []byte) error {
	return api.SignRenewRequest(r, nodeKey, servicePub)
}

func checkServiceURLs(s string) error { return api.CheckServiceURLs(s) }

// The API's sentinel errors, the same values as package api's, so errors.Is matches either.
var (
	ErrTokenUnknown      = api.ErrTokenUnknown
	ErrTokenUsed         = api.ErrTokenUsed
	ErrTokenExpired      = api.ErrTokenExpired
	ErrTokenFormat       = api.ErrTokenFormat
	ErrRevoked           = api.ErrRevoked
	ErrNotFound          = api.ErrNotFound
	ErrBadKey            = api.ErrBadKey
	ErrSameKey           = api.ErrSameKey
	ErrBadProof          = api.ErrBadProof
	ErrReplay            = api.ErrReplay
	ErrStale             = api.ErrStale
	ErrCertInvalid       = api.ErrCertInvalid
	ErrCertSuperseded    = api.ErrCertSuperseded
	ErrMalformed         = api.ErrMalformed
	ErrFork              = api.ErrFork
	ErrRenewLimited      = api.ErrRenewLimited
	ErrBlocklistTooLarge = api.ErrBlocklistTooLarge
	ErrNoActiveCA        = api.ErrNoActiveCA
	ErrRateLimited       = api.ErrRateLimited
	ErrTooLarge          = api.ErrTooLarge
	ErrBusy              = api.ErrBusy
	ErrCIDRUnknown       = api.ErrCIDRUnknown
	ErrCIDRInvalid       = api.ErrCIDRInvalid
	ErrNameTaken         = api.ErrNameTaken
	ErrIPTaken           = api.ErrIPTaken
	ErrNoFreeIP          = api.ErrNoFreeIP
	ErrIPOutsideCIDR     = api.ErrIPOutsideCIDR
	ErrInvalidName       = api.ErrInvalidName
)
