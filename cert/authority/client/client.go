// Package client is a node's side of the CA service: enroll with a token, renew with proof
// of possession, fetch and verify the signed blocklist. It talks HTTPS to a service it
// recognises only by the SHA-256 pin of its TLS certificate, and writes no files: the caller
// decides where keys and certificates go (atomically, see cert.WriteFiles).
package client

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority/api"
)

// ErrPinMismatch means the service presented a TLS certificate other than the pinned one:
// nothing was sent to it.
var ErrPinMismatch = errors.New("CA service TLS certificate does not match the pinned fingerprint")

// maxResponse caps what we read from the service; the service publishes no blocklist
// larger than that.
const maxResponse = api.MaxResponseSize

// Client talks to one CA service, which may be several replicas: url may list several
// URLs separated by commas (and a name may resolve to several addresses, which the dialer
// tries in turn). A request that cannot reach one replica goes to the next, and the client
// stays with the one that answered.
type Client struct {
	url  string // as given, for messages
	urls []string
	cur  atomic.Uint32 // index in urls of the replica last reached
	http *http.Client
	now  func() time.Time
}

// base is the URL of the replica to ask first.
func (c *Client) base() string { return c.urls[int(c.cur.Load())%len(c.urls)] }

// failover moves on from base after it could not be reached, unless a concurrent request
// moved on already.
func (c *Client) failover(base string) {
	i := c.cur.Load()
	if c.urls[int(i)%len(c.urls)] == base {
		c.cur.CompareAndSwap(i, uint32((int(i)+1)%len(c.urls)))
	}
}

// SplitURLs reads a comma-separated list of service URLs (ca.yml's urls, a token's, a
// node's renewal.url).
func SplitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// Options adjust a Client; the zero value is fine.
type Options struct {
	Timeout time.Duration // per request, default 30 s
	Now     func() time.Time
}

// New returns a client for the service at url (https://host:port) whose TLS certificate
// has SHA-256 pin.
func New(url string, pin []byte, o Options) *Client {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	pin = bytes.Clone(pin)
	tr := &http.Transport{
		Proxy: nil, // the pin is the trust anchor; a proxy would only see TLS anyway, keep it direct
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// Chain and name checks are replaced by the pin, checked before any request byte
			// is sent.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return ErrPinMismatch
				}
				got := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if len(pin) != sha256.Size || subtle.ConstantTimeCompare(got[:], pin) != 1 {
					return ErrPinMismatch
				}
				return nil
			},
		},
		// A replica that is down must not hold a request for the whole timeout: the next
		// one is tried after this.
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        2,
	}
	urls := SplitURLs(url)
	if len(urls) == 0 {
		urls = []string{""} // requests fail with a clear "unsupported protocol scheme"
	}
	return &Client{url: strings.TrimRight(url, "/"), urls: urls, http: &http.Client{Transport: tr, Timeout: o.Timeout}, now: o.Now}
}

// do posts (or gets, with in == nil) and decodes the answer into out, turning an API error
// into its sentinel (errors.Is works across the wire).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	var lastErr error
	for range c.urls {
		base := c.base()
		var r io.Reader
		if in != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, r)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if errors.Is(err, ErrPinMismatch) {
				lastErr = ErrPinMismatch
			} else {
				lastErr = fmt.Errorf("CA service %s: %w", base, err)
			}
			if ctx.Err() != nil {
				return lastErr
			}
			// Not reached, or no answer: the next replica. A request the first one did
			// carry out is refused there as used (token) or replayed (renewal nonce), and
			// the caller's retry with a fresh request gets its result.
			c.failover(base)
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return responseError(resp)
		}
		dec := json.NewDecoder(io.LimitReader(resp.Body, maxResponse))
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("CA service: bad response: %w", err)
		}
		return nil
	}
	return lastErr
}

// responseError turns a non-2xx answer into its API sentinel (errors.Is works across the
// wire) or a StatusError.
func responseError(resp *http.Response) error {
	var e api.ErrorResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&e); err != nil {
		return &StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	if s := api.ErrorForCode(e.Code); s != nil {
		return &apiError{sentinel: s, msg: e.Message}
	}
	return &StatusError{Code: resp.StatusCode, Status: resp.Status, Message: e.Message}
}

// StatusError is an HTTP error answer without an API error code the client knows: from a
// proxy in front of the service, an overloaded service, or a newer service version.
type StatusError struct {
	Code    int    // HTTP status code
	Status  string // HTTP status line, e.g. "503 Service Unavailable"
	Message string // the body's message, if it had one
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return "CA service: " + e.Status
	}
	return "CA service: " + e.Status + ": " + e.Message
}

// Temporary reports whether asking again later may succeed (a 5xx answer).
func (e *StatusError) Temporary() bool { return e.Code >= 500 }

type apiError struct {
	sentinel error
	msg      string
}

func (e *apiError) Error() string { return "CA service: " + e.msg }
func (e *apiError) Unwrap() error { return e.sentinel }

// Enrollment is what Enroll returns; Key is the private key made here, never sent.
type Enrollment struct {
	Key         []byte
	KeyPEM      []byte
	Cert        *cert.Certificate
	CertPEM     []byte
	CABundle    []byte
	Lighthouses []api.Lighthouse
	ServiceKey  []byte // the service's X25519 public key, needed to renew
	URL         string
	Pin         []byte
}

// Enroll enrolls with a token string (which names the service and its pin).
func Enroll(ctx context.Context, token string, o Options) (*Enrollment, error) {
	t, err := api.ParseToken(token)
	if err != nil {
		return nil, err
	}
	e, err := New(t.URL, t.Pin, o).Enroll(ctx, t.Secret)
	if err != nil {
		return nil, err
	}
	e.URL, e.Pin = t.URL, bytes.Clone(t.Pin)
	return e, nil
}

// Enroll makes a key pair, sends the public half with the token secret, and checks that the
// certificate it gets back is for that key and chains to the bundle it came with.
func (c *Client) Enroll(ctx context.Context, secret []byte) (*Enrollment, error) {
	pub, priv, err := cert.GenerateX25519()
	if err != nil {
		return nil, err
	}
	var resp api.EnrollResponse
	if err := c.do(ctx, http.MethodPost, "/v1/enroll", api.EnrollRequest{Secret: secret, PublicKey: pub}, &resp); err != nil {
		return nil, err
	}
	crt, err := c.checkIssued([]byte(resp.Cert), []byte(resp.CABundle), priv)
	if err != nil {
		return nil, err
	}
	return &Enrollment{Key: priv, KeyPEM: cert.MarshalX25519PrivateKey(priv), Cert: crt, CertPEM: []byte(resp.Cert),
		CABundle: []byte(resp.CABundle), Lighthouses: resp.Lighthouses, ServiceKey: resp.ServiceKey}, nil
}

func (c *Client) checkIssued(certPEM, bundle, priv []byte) (*cert.Certificate, error) {
	crt, _, err := cert.UnmarshalPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA service sent a bad certificate: %w", err)
	}
	if err := crt.VerifyPrivateKey(priv); err != nil {
		return nil, fmt.Errorf("CA service sent a certificate for another key: %w", err)
	}
	// Judged at the cert's own start, not by our clock: the token or renewal is spent by
	// now, so a host whose clock is off must still get its cert (the node warns about skew).
	at := func() time.Time { return crt.Details.NotBefore }
	pool, err := cert.NewPoolFromPEMWithClock(bundle, at)
	if err != nil {
		return nil, fmt.Errorf("CA service sent a bad CA bundle: %w", err)
	}
	if _, err := pool.Verify(crt, at()); err != nil {
		return nil, fmt.Errorf("CA service sent a certificate that does not verify: %w", err)
	}
	return crt, nil
}

// RenewParams is the node's current state.
type RenewParams struct {
	CertPEM    []byte // current certificate
	Key        []byte // its X25519 private key
	ServiceKey []byte // the service's X25519 public key (from enrollment)
	// Counter must exceed every counter this host used before; zero means the wall clock
	// in nanoseconds, which needs no state on the node as long as its clock does not jump back.
	Counter uint64
	// NewKey is the X25519 private key to renew for; nil makes a fresh one. A retry after a
	// failed attempt whose reply may have been lost must use the same key: the service
	// then answers with the certificate it already issued, while a request from the old
	// certificate for another key is refused as a fork (api.ErrFork).
	NewKey []byte
}

// Renewal is a new certificate with the new key made here.
type Renewal struct {
	Key      []byte
	KeyPEM   []byte
	Cert     *cert.Certificate
	CertPEM  []byte
	CABundle []byte
}

// Renew makes a new key pair and asks for a certificate of the same identity for it, proving
// possession of the current key.
func (c *Client) Renew(ctx context.Context, p RenewParams) (*Renewal, error) {
	priv := p.NewKey
	if priv == nil {
		_, k, err := cert.GenerateX25519()
		if err != nil {
			return nil, err
		}
		priv = k
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	pub := k.PublicKey().Bytes()
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	now := c.now()
	counter := p.Counter
	if counter == 0 {
		counter = uint64(now.UnixNano())
	}
	req := api.RenewRequest{Cert: p.CertPEM, PublicKey: pub, Nonce: nonce, Counter: counter, Time: now.Unix()}
	if err := api.SignRenewRequest(&req, p.Key, p.ServiceKey); err != nil {
		return nil, err
	}
	var resp api.RenewResponse
	if err := c.do(ctx, http.MethodPost, "/v1/renew", req, &resp); err != nil {
		return nil, err
	}
	crt, err := c.checkIssued([]byte(resp.Cert), []byte(resp.CABundle), priv)
	if err != nil {
		return nil, err
	}
	priv = bytes.Clone(priv)
	return &Renewal{Key: priv, KeyPEM: cert.MarshalX25519PrivateKey(priv), Cert: crt, CertPEM: []byte(resp.Cert), CABundle: []byte(resp.CABundle)}, nil
}

// FetchBlocklist gets the current blocklist and verifies its signature against pool.
func (c *Client) FetchBlocklist(ctx context.Context, pool *cert.Pool) (*cert.SignedBlocklist, error) {
	var b cert.SignedBlocklist
	if err := c.do(ctx, http.MethodGet, "/v1/blocklist", nil, &b); err != nil {
		return nil, err
	}
	if err := cert.VerifyBlocklist(&b, pool); err != nil {
		return nil, err
	}
	return &b, nil
}

// Health asks the service how it is.
func (c *Client) Health(ctx context.Context) (*api.HealthResponse, error) {
	var h api.HealthResponse
	if err := c.do(ctx, http.MethodGet, "/v1/health", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
