package authority

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ServerOptions configure a Server. Authority and TLS are required.
type ServerOptions struct {
	Authority *Authority
	TLS       TLSIdentity
	// EnrollRate and EnrollBurst limit enrollments per source address (defaults 1/s, burst
	// 5; a negative rate disables the limit).
	EnrollRate  float64
	EnrollBurst int
	// MaxBody caps request bodies (default 64 KiB; a cert is well under 1 KiB).
	MaxBody int64
	// MaxBlocklistWaiters bounds the blocklist long-polls held at once (default
	// DefaultMaxBlocklistWaiters); more are refused with 503 "busy".
	MaxBlocklistWaiters int
	// Registerer, if set, gets the service's metrics (a private registry, never the global).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Server serves the Authority over HTTPS:
//
//	POST /v1/enroll     EnrollRequest -> EnrollResponse
//	POST /v1/renew      RenewRequest  -> RenewResponse
//	GET  /v1/blocklist  -> SignedBlocklist
//	GET  /v1/blocklist?after=V&wait=S -> SignedBlocklist newer than V, or 204 after S s (longpoll.go)
//	GET  /v1/health     -> HealthResponse
//
// Failures answer an ErrorResponse. Handlers only decode, call the Authority and encode.
type Server struct {
	o        ServerOptions
	limiter  *limiter
	requests *prometheus.CounterVec
	waiters  chan struct{} // one token per held blocklist long-poll
	stopping chan struct{} // closed when Serve begins to shut down: held long-polls answer
	stopOnce sync.Once
}

// NewServer returns a Server.
func NewServer(o ServerOptions) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.EnrollRate == 0 {
		o.EnrollRate = 1
	}
	if o.EnrollBurst <= 0 {
		o.EnrollBurst = 5
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 10
	}
	if o.MaxBlocklistWaiters <= 0 {
		o.MaxBlocklistWaiters = DefaultMaxBlocklistWaiters
	}
	s := &Server{o: o, limiter: newLimiter(o.EnrollRate, o.EnrollBurst, o.Now),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshnode_ca_requests_total", Help: "CA service requests by path and result code (ok or the error code).",
		}, []string{"path", "code"}),
		waiters: make(chan struct{}, o.MaxBlocklistWaiters), stopping: make(chan struct{})}
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.requests)
		o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshnode_ca_blocklist_waiters", Help: "Blocklist long-poll requests held open now.",
		}, func() float64 { return float64(len(s.waiters)) }))
		if o.Authority != nil {
			o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meshnode_ca_active_ca_expiry_seconds", Help: "Seconds until the active CA expires; host certs never outlive it.",
			}, func() float64 { return o.Authority.ActiveCA().Details.NotAfter.Sub(o.Now()).Seconds() }))
		}
	}
	return s
}

// Handler is the HTTP API (without TLS), for tests and for embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", s.enroll)
	mux.HandleFunc("POST /v1/renew", s.renew)
	mux.HandleFunc("GET /v1/blocklist", s.blocklist)
	mux.HandleFunc("GET /v1/health", s.health)
	return mux
}

// TLSConfig is the server side TLS configuration: TLS 1.3 only, the pinned certificate.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{s.o.TLS.Cert}}
}

// Serve accepts HTTPS connections on ln until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelDebug),
	}
	return ServeTLS(ctx, ln, hs, s.TLSConfig(), func() { s.stopOnce.Do(func() { close(s.stopping) }) })
}

// ServeTLS serves hs over TLS on ln until ctx is done, then calls beforeShutdown (if not
// nil: e.g. to answer held long-polls) and shuts down gracefully, waiting up to 5 s. The
// API server and the web console both serve this way.
func ServeTLS(ctx context.Context, ln net.Listener, hs *http.Server, cfg *tls.Config, beforeShutdown func()) error {
	done := make(chan error, 1)
	go func() { done <- hs.Serve(tls.NewListener(ln, cfg)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if beforeShutdown != nil {
			beforeShutdown()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		<-done
		return err
	}
}

// decode reads exactly one JSON object of at most MaxBody bytes with no unknown fields.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.o.MaxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return ErrTooLarge
		}
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

func (s *Server) ok(w http.ResponseWriter, r *http.Request, v any) {
	s.requests.WithLabelValues(r.URL.Path, "ok").Inc()
	s.reply(w, http.StatusOK, v)
}

func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, status := ErrorCode(err)
	s.requests.WithLabelValues(r.URL.Path, code).Inc()
	msg := err.Error()
	if status == http.StatusInternalServerError {
		// The detail stays in our log; the client learns nothing about the inside.
		s.o.Logger.Error("request failed", "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	s.reply(w, status, ErrorResponse{Code: code, Message: msg})
}

func sourceAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	if !s.limiter.allow(sourceAddr(r)) {
		s.fail(w, r, ErrRateLimited)
		return
	}
	var req EnrollRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	e, err := s.o.Authority.Enroll(req.Secret, req.PublicKey)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, r, EnrollResponse{Cert: string(e.CertPEM), CABundle: string(e.CABundle), Lighthouses: e.Lighthouses, ServiceKey: e.ServiceKey})
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	var req RenewRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.o.Authority.Renew(req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, r, RenewResponse{Cert: string(res.CertPEM), CABundle: string(res.CABundle)})
}

func (s *Server) blocklist(w http.ResponseWriter, r *http.Request) {
	if q := r.URL.Query(); q.Has("after") || q.Has("wait") {
		s.waitBlocklist(w, r)
		return
	}
	b, err := s.o.Authority.Blocklist()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, r, b)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	v, err := s.o.Authority.BlocklistVersion()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, r, HealthResponse{Status: "ok", BlocklistVersion: v, Warnings: s.o.Authority.Warnings()})
}
