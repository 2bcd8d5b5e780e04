package lighthouse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DNSOptions configure a DNSServer. Only Resolve is required.
type DNSOptions struct {
	// Resolve maps a host name from a certificate to its VPN IP. It gets the queried name
	// ASCII-lowercased, without the trailing dot ("web1" for "WEB1."), and must be safe for
	// concurrent use.
	Resolve func(name string) (netip.Addr, bool)
	// ResolveAll, when set, is used instead of Resolve: every VPN address of the host (a v2
	// certificate may hold several, IPv6 among them). A queries get the IPv4 ones, AAAA
	// queries the IPv6 ones, at most maxDNSAnswers each.
	ResolveAll func(name string) ([]netip.Addr, bool)
	// TTL of answers (0: 60 s). Names follow certificates, which change rarely, but a host
	// re-issued with another IP should not stay stale for long.
	TTL time.Duration
	// Rate and Burst limit queries per source address (0: 100/s, burst 200). Drops are
	// counted in DNSStats.RateLimited.
	Rate  float64
	Burst int
	// Now is the clock for the rate limiter; nil means time.Now.
	Now func() time.Time
	// Logger gets serve-loop errors; nil discards them.
	Logger *slog.Logger
}

// DNSStats counts what a DNSServer did; safe to read while it serves.
type DNSStats struct {
	Queries     uint64 // datagrams received
	Answered    uint64 // NOERROR replies (with or without an answer)
	NXDomain    uint64 // unknown names
	FormErr     uint64 // malformed queries that got FORMERR
	NotImp      uint64 // other opcodes or classes
	Ignored     uint64 // no reply: shorter than a header, or a response
	RateLimited uint64 // dropped by the per-source limit
}

// DNSServer is the lighthouse's DNS responder (lighthouse.serve_dns): A queries for host
// names from certificates are answered with their VPN IP, AAAA and other types for a known
// name get an empty NOERROR answer, unknown names NXDOMAIN. It is safe for concurrent use.
type DNSServer struct {
	opts    DNSOptions
	limiter *Limiter
	log     *slog.Logger

	queries, answered, nxdomain, formerr, notimp, ignored atomic.Uint64
}

// NewDNSServer returns a responder; Resolve must not be nil.
func NewDNSServer(opts DNSOptions) (*DNSServer, error) {
	if opts.Resolve == nil && opts.ResolveAll == nil {
		return nil, errors.New("lighthouse: DNSOptions.Resolve is nil")
	}
	if opts.TTL <= 0 {
		opts.TTL = 60 * time.Second
	}
	if opts.Rate <= 0 {
		opts.Rate = 100
	}
	if opts.Burst <= 0 {
		opts.Burst = 200
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DNSServer{
		opts:    opts,
		limiter: NewLimiter(LimiterOptions{Rate: opts.Rate, Burst: opts.Burst, Now: opts.Now}),
		log:     log,
	}, nil
}

// Stats returns the counters so far.
func (s *DNSServer) Stats() DNSStats {
	return DNSStats{
		Queries: s.queries.Load(), Answered: s.answered.Load(), NXDomain: s.nxdomain.Load(),
		FormErr: s.formerr.Load(), NotImp: s.notimp.Load(), Ignored: s.ignored.Load(),
		RateLimited: s.limiter.Dropped(),
	}
}

// Respond builds the reply to one query datagram, appended to buf[:0]; false means send
// nothing. It applies no rate limit (Serve does).
func (s *DNSServer) Respond(query, buf []byte) ([]byte, bool) {
	s.queries.Add(1)
	h, err := parseDNSHeader(query)
	if err != nil || h.flags&flagQR != 0 {
		// Too short to echo an ID, or a response: answering responses lets two responders
		// bounce packets between each other forever.
		s.ignored.Add(1)
		return nil, false
	}
	reply := dnsHeader{id: h.id, flags: flagQR | h.flags&(0xf<<11|flagRD)}
	if h.opcode() != dnsOpQuery {
		s.notimp.Add(1)
		reply.flags |= rcodeNotImp
		return reply.append(buf[:0]), true
	}
	if h.qd != 1 || h.an != 0 || h.ns != 0 {
		s.formerr.Add(1)
		reply.flags |= rcodeFormErr
		return reply.append(buf[:0]), true
	}
	q, _, err := parseDNSQuestion(query, dnsHeaderLen)
	if err != nil {
		s.formerr.Add(1)
		reply.flags |= rcodeFormErr
		return reply.append(buf[:0]), true
	}
	reply.qd = 1
	if q.qcls != dnsClassIN {
		s.notimp.Add(1)
		reply.flags |= rcodeNotImp
		return q.append(reply.append(buf[:0])), true
	}
	reply.flags |= flagAA
	var addrs []netip.Addr
	known := false
	if name, ok := nameKey(q.wire); ok {
		if s.opts.ResolveAll != nil {
			addrs, known = s.opts.ResolveAll(name)
		} else if ip, ok := s.opts.Resolve(name); ok {
			addrs, known = []netip.Addr{ip}, true
		}
		known = known && slices.ContainsFunc(addrs, func(a netip.Addr) bool { return a.IsValid() })
	}
	if !known {
		s.nxdomain.Add(1)
		reply.flags |= rcodeNXDomain
		return q.append(reply.append(buf[:0])), true
	}
	s.answered.Add(1)
	// A gets the IPv4 addresses, AAAA the IPv6 ones; a name without any of the type (or
	// another type) is an empty NOERROR answer: the name exists.
	var rdata [maxDNSAnswers][]byte
	for _, a := range addrs {
		if reply.an == maxDNSAnswers {
			break
		}
		switch {
		case q.qtype == dnsTypeA && a.Unmap().Is4():
			b := a.Unmap().As4()
			rdata[reply.an] = b[:]
		case q.qtype == dnsTypeAAAA && a.Is6() && !a.Is4In6():
			b := a.As16()
			rdata[reply.an] = b[:]
		default:
			continue
		}
		reply.an++
	}
	b := q.append(reply.append(buf[:0]))
	for _, d := range rdata[:reply.an] {
		b = binary.BigEndian.AppendUint16(b, 0xc000|dnsHeaderLen) // the question's name
		b = binary.BigEndian.AppendUint16(b, q.qtype)
		b = binary.BigEndian.AppendUint16(b, dnsClassIN)
		b = binary.BigEndian.AppendUint32(b, uint32(s.opts.TTL/time.Second))
		b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
		b = append(b, d...)
	}
	return b, true
}

// maxDNSAnswers bounds the records of one answer (a reply stays far below 512 bytes).
const maxDNSAnswers = 8

// Serve answers queries on conn until ctx is done (then it closes conn and returns nil) or
// conn fails.
func (s *DNSServer) Serve(ctx context.Context, conn *net.UDPConn) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := make(chan struct{})
	defer close(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		conn.Close()
	}()
	in := make([]byte, 1500)
	out := make([]byte, 0, 512)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(in)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lighthouse dns: read: %w", err)
		}
		if !s.limiter.Allow(from.Addr().Unmap()) {
			continue
		}
		reply, ok := s.Respond(in[:n], out)
		if !ok {
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(reply, from); err != nil {
			s.log.Debug("lighthouse dns: write failed", "to", from, "err", err)
		}
	}
}

// ListenAndServe listens on the UDP address addr (lighthouse.dns.host:port) and serves until
// ctx is done.
func (s *DNSServer) ListenAndServe(ctx context.Context, addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("lighthouse dns: %w", err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("lighthouse dns: %w", err)
	}
	return s.Serve(ctx, conn)
}
