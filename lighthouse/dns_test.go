package lighthouse

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// query builds a DNS query the way a stub resolver does; name is dotted ("web1.").
func query(id uint16, name string, qtype uint16) []byte {
	b := dnsHeader{id: id, flags: flagRD, qd: 1}.append(nil)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l != "" {
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, dnsClassIN)
}

type dnsRR struct {
	name         string
	rtype, class uint16
	ttl          uint32
	data         []byte
}

type dnsReply struct {
	h       dnsHeader
	q       dnsQuestion
	answers []dnsRR
}

func (r dnsReply) rcode() int { return int(r.h.flags & 0xf) }

// parseReply is the test's resolver side: it decodes a whole response, answers included, and
// fails on anything a client would choke on.
func parseReply(b []byte) (dnsReply, error) {
	var r dnsReply
	h, err := parseDNSHeader(b)
	if err != nil {
		return r, err
	}
	r.h = h
	off := dnsHeaderLen
	if h.qd > 1 {
		return r, errors.New("more than one question")
	}
	if h.qd == 1 {
		if r.q, off, err = parseDNSQuestion(b, off); err != nil {
			return r, err
		}
	}
	for i := 0; i < int(h.an); i++ {
		wire, next, err := readName(b, off)
		if err != nil {
			return r, err
		}
		if next+10 > len(b) {
			return r, errors.New("answer truncated")
		}
		rr := dnsRR{rtype: binary.BigEndian.Uint16(b[next:]), class: binary.BigEndian.Uint16(b[next+2:]),
			ttl: binary.BigEndian.Uint32(b[next+4:])}
		rr.name, _ = nameKey(wire)
		dl := int(binary.BigEndian.Uint16(b[next+8:]))
		if next+10+dl > len(b) {
			return r, errors.New("rdata truncated")
		}
		rr.data = b[next+10 : next+10+dl]
		r.answers = append(r.answers, rr)
		off = next + 10 + dl
	}
	if off != len(b) || h.ns != 0 || h.ar != 0 {
		return r, errors.New("trailing bytes or unexpected sections")
	}
	return r, nil
}

func testResolver(name string) (netip.Addr, bool) {
	switch name {
	case "web1":
		return netip.MustParseAddr("10.99.0.5"), true
	case "db.internal":
		return netip.MustParseAddr("10.99.0.6"), true
	}
	return netip.Addr{}, false
}

func newTestDNS(t testing.TB, opts DNSOptions) *DNSServer {
	t.Helper()
	if opts.Resolve == nil {
		opts.Resolve = testResolver
	}
	s, err := NewDNSServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDNSAnswersByName(t *testing.T) {
	s := newTestDNS(t, DNSOptions{})
	tests := []struct {
		name     string
		q        []byte
		rcode    int
		answer   string // A record data, "" for none
		echoName string
	}{
		{"A for a cert name", query(1, "web1.", dnsTypeA), rcodeOK, "10.99.0.5", "web1"},
		{"name case-insensitive, case echoed", query(2, "WeB1.", dnsTypeA), rcodeOK, "10.99.0.5", "web1"},
		{"multi-label name", query(3, "db.internal.", dnsTypeA), rcodeOK, "10.99.0.6", "db.internal"},
		{"AAAA for a known name is empty NOERROR", query(4, "web1.", dnsTypeAAAA), rcodeOK, "", "web1"},
		{"other types for a known name are empty NOERROR", query(5, "web1.", 16), rcodeOK, "", "web1"},
		{"unknown name is NXDOMAIN", query(6, "nope.", dnsTypeA), rcodeNXDomain, "", "nope"},
		{"root name is NXDOMAIN (nebula #1635)", query(7, ".", dnsTypeA), rcodeNXDomain, "", ""},
		{"label with a dot never matches", append(append(dnsHeader{id: 8, qd: 1}.append(nil), "\x06web1.x\x00"...), 0, 1, 0, 1), rcodeNXDomain, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := s.Respond(tc.q, nil)
			if !ok {
				t.Fatal("no reply")
			}
			r, err := parseReply(b)
			if err != nil {
				t.Fatalf("reply %x: %v", b, err)
			}
			if r.h.id != binary.BigEndian.Uint16(tc.q) || r.h.flags&flagQR == 0 || r.rcode() != tc.rcode {
				t.Fatalf("header %+v, want id %d, QR, rcode %d", r.h, binary.BigEndian.Uint16(tc.q), tc.rcode)
			}
			if qEnd := len(tc.q); !bytes.Equal(b[dnsHeaderLen:dnsHeaderLen+qEnd-dnsHeaderLen], tc.q[dnsHeaderLen:]) {
				t.Fatalf("question not echoed byte for byte")
			}
			if tc.answer == "" {
				if len(r.answers) != 0 {
					t.Fatalf("unexpected answers %+v", r.answers)
				}
				return
			}
			if len(r.answers) != 1 {
				t.Fatalf("%d answers, want 1", len(r.answers))
			}
			a := r.answers[0]
			ip, _ := netip.AddrFromSlice(a.data)
			if a.rtype != dnsTypeA || a.class != dnsClassIN || a.name != tc.echoName || ip.String() != tc.answer || a.ttl != 60 {
				t.Fatalf("answer %+v (ip %v), want A IN %s %s ttl 60", a, ip, tc.echoName, tc.answer)
			}
		})
	}
}

func TestDNSRejectsMalformedQueries(t *testing.T) {
	s := newTestDNS(t, DNSOptions{})
	good := query(9, "web1.", dnsTypeA)
	withHeader := func(h dnsHeader, rest []byte) []byte { return append(h.append(nil), rest...) }
	long := dnsHeader{id: 9, qd: 1}.append(nil)
	for i := 0; i < 130; i++ {
		long = append(long, 1, 'a')
	}
	long = append(long, 0, 0, 1, 0, 1)
	tests := []struct {
		name  string
		in    []byte
		reply bool
		rcode int
	}{
		{"empty datagram ignored", nil, false, 0},
		{"truncated header ignored", good[:11], false, 0},
		{"response ignored", withHeader(dnsHeader{id: 9, flags: flagQR, qd: 1}, good[12:]), false, 0},
		{"no question", withHeader(dnsHeader{id: 9}, nil), true, rcodeFormErr},
		{"two questions", withHeader(dnsHeader{id: 9, qd: 2}, append(good[12:], good[12:]...)), true, rcodeFormErr},
		{"huge counts", withHeader(dnsHeader{id: 9, qd: 0xffff, an: 0xffff, ns: 0xffff, ar: 0xffff}, good[12:]), true, rcodeFormErr},
		{"answers in a query", withHeader(dnsHeader{id: 9, qd: 1, an: 1}, good[12:]), true, rcodeFormErr},
		{"question truncated in the name", good[:15], true, rcodeFormErr},
		{"question truncated in the type", good[:len(good)-3], true, rcodeFormErr},
		{"compression pointer to itself", withHeader(dnsHeader{id: 9, qd: 1}, []byte{0xc0, 12, 0, 1, 0, 1}), true, rcodeFormErr},
		{"compression loop through a label", withHeader(dnsHeader{id: 9, qd: 1}, []byte{1, 'a', 0xc0, 12, 0, 1, 0, 1}), true, rcodeFormErr},
		{"forward pointer", withHeader(dnsHeader{id: 9, qd: 1}, []byte{0xc0, 20, 0, 1, 0, 1, 0, 0, 0}), true, rcodeFormErr},
		{"reserved label type", withHeader(dnsHeader{id: 9, qd: 1}, []byte{0x40, 0, 1, 0, 1}), true, rcodeFormErr},
		{"name over 255 octets", long, true, rcodeFormErr},
		{"other opcode", withHeader(dnsHeader{id: 9, flags: 2 << 11, qd: 1}, good[12:]), true, rcodeNotImp},
		{"class CH", append(good[:len(good)-2:len(good)-2], 0, 3), true, rcodeNotImp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := s.Respond(tc.in, nil)
			if ok != tc.reply {
				t.Fatalf("reply = %v, want %v", ok, tc.reply)
			}
			if !ok {
				return
			}
			r, err := parseReply(b)
			if err != nil {
				t.Fatalf("reply %x unreadable: %v", b, err)
			}
			if r.h.id != 9 || r.rcode() != tc.rcode || len(r.answers) != 0 {
				t.Fatalf("reply %+v, want id 9 rcode %d and no answers", r.h, tc.rcode)
			}
		})
	}
	st := s.Stats()
	if st.Ignored != 3 || st.FormErr != 11 || st.NotImp != 2 || st.Queries != uint64(len(tests)) {
		t.Fatalf("stats %+v", st)
	}
}

// A query the way dig sends it, with an EDNS OPT record in the additional section, is
// answered (the OPT record is not echoed).
func TestDNSIgnoresEDNSAdditionalRecord(t *testing.T) {
	s := newTestDNS(t, DNSOptions{})
	q := query(10, "web1.", dnsTypeA)
	q[11] = 1 // ARCOUNT
	q = append(q, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0)
	b, ok := s.Respond(q, nil)
	r, err := parseReply(b)
	if !ok || err != nil || len(r.answers) != 1 {
		t.Fatalf("reply %x ok=%v err=%v", b, ok, err)
	}
}

func FuzzDNS(f *testing.F) {
	f.Add(query(1, "web1.", dnsTypeA))
	f.Add(query(2, ".", dnsTypeAAAA))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0xc0, 3, 0, 1, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	s := newTestDNS(f, DNSOptions{})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, ok := s.Respond(in, make([]byte, 0, 512))
		if !ok {
			return
		}
		r, err := parseReply(b)
		if err != nil {
			t.Fatalf("reply %x to %x unreadable: %v", b, in, err)
		}
		if r.h.id != binary.BigEndian.Uint16(in) || r.h.flags&flagQR == 0 || len(b) > 512 {
			t.Fatalf("bad reply header %+v (len %d)", r.h, len(b))
		}
	})
}

// serveDNS starts a server on an ephemeral loopback port and returns its address.
func serveDNS(t *testing.T, s *DNSServer) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// exchange sends q and waits up to wait for a reply; ok is false on timeout.
func exchange(t *testing.T, c *net.UDPConn, q []byte, wait time.Duration) ([]byte, bool) {
	t.Helper()
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], true
}

func TestDNSServesOverUDP(t *testing.T) {
	addr := serveDNS(t, newTestDNS(t, DNSOptions{}))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, ok := exchange(t, c, query(0x1234, "web1.", dnsTypeA), 5*time.Second)
	if !ok {
		t.Fatal("no reply")
	}
	r, err := parseReply(b)
	if err != nil || r.h.id != 0x1234 || len(r.answers) != 1 || !bytes.Equal(r.answers[0].data, []byte{10, 99, 0, 5}) {
		t.Fatalf("reply %+v, err %v", r, err)
	}
	b, ok = exchange(t, c, query(0x1235, "nope.", dnsTypeA), 5*time.Second)
	if r, err = parseReply(b); !ok || err != nil || r.rcode() != rcodeNXDomain {
		t.Fatalf("unknown name: ok %v reply %+v err %v", ok, r, err)
	}
}

func TestDNSRateLimitsEachSource(t *testing.T) {
	clk := newClock() // frozen: no refill during the test
	s := newTestDNS(t, DNSOptions{Rate: 1, Burst: 3, Now: clk.Now})
	addr := serveDNS(t, s)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if _, ok := exchange(t, c, query(uint16(i), "web1.", dnsTypeA), 5*time.Second); !ok {
			t.Fatalf("query %d within the burst got no reply", i)
		}
	}
	if _, ok := exchange(t, c, query(99, "web1.", dnsTypeA), 300*time.Millisecond); ok {
		t.Fatal("query beyond the burst answered")
	}
	if st := s.Stats(); st.RateLimited != 1 || st.Answered != 3 {
		t.Fatalf("stats %+v, want 1 rate-limited and 3 answered", st)
	}
}

func BenchmarkDNSRespond(b *testing.B) {
	s := newTestDNS(b, DNSOptions{})
	q := query(1, "web1.", dnsTypeA)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = s.Respond(q, buf)
	}
}

// Go's own resolver is an independent DNS client: it sends A and AAAA queries with EDNS0 and
// must read our answers, treat the empty AAAA answer as "no such record" and NXDOMAIN as
// "not found".
func TestDNSAnswersAreReadByGoResolver(t *testing.T) {
	addr := serveDNS(t, newTestDNS(t, DNSOptions{}))
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr.String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", "WEB1.")
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 1 || ips[0].Unmap() != netip.MustParseAddr("10.99.0.5") {
		t.Fatalf("LookupNetIP = %v", ips)
	}
	_, err = r.LookupNetIP(ctx, "ip4", "nope.")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("unknown name: %v, want a not-found DNSError", err)
	}
}

func TestDNSListenAndServeStopsWithItsContext(t *testing.T) {
	s := newTestDNS(t, DNSOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, "127.0.0.1:0") }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
	if err := s.ListenAndServe(context.Background(), "127.0.0.1:notaport"); err == nil {
		t.Fatal("bad address accepted")
	}
	if _, err := NewDNSServer(DNSOptions{}); err == nil {
		t.Fatal("NewDNSServer without Resolve accepted")
	}
}

// With ResolveAll, A answers carry a host's IPv4 addresses and AAAA answers its IPv6 ones
// (a v2 certificate may hold both); a host with none of the asked family is NOERROR, empty.
func TestDNSAnswersAAAAFromResolveAll(t *testing.T) {
	s := newTestDNS(t, DNSOptions{ResolveAll: func(name string) ([]netip.Addr, bool) {
		switch name {
		case "dual":
			return []netip.Addr{netip.MustParseAddr("10.99.0.7"), netip.MustParseAddr("fd42::7"), netip.MustParseAddr("fd42:1::7")}, true
		case "v4only":
			return []netip.Addr{netip.MustParseAddr("10.99.0.8")}, true
		}
		return nil, false
	}})
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
		rcode int
	}{
		{"dual.", dnsTypeA, []string{"10.99.0.7"}, rcodeOK},
		{"dual.", dnsTypeAAAA, []string{"fd42::7", "fd42:1::7"}, rcodeOK},
		{"v4only.", dnsTypeAAAA, nil, rcodeOK},
		{"nope.", dnsTypeAAAA, nil, rcodeNXDomain},
	} {
		b, ok := s.Respond(query(9, tc.name, tc.qtype), nil)
		if !ok {
			t.Fatal("no reply")
		}
		r, err := parseReply(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, a := range r.answers {
			ip, _ := netip.AddrFromSlice(a.data)
			if a.rtype != tc.qtype {
				t.Fatalf("%s: record type %d", tc.name, a.rtype)
			}
			got = append(got, ip.String())
		}
		if int(r.h.flags&0xf) != tc.rcode || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("%s type %d: rcode %d, %v; want %d, %v", tc.name, tc.qtype, r.h.flags&0xf, got, tc.rcode, tc.want)
		}
	}
}
