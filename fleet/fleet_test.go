package fleet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

func TestHostAddressesAreDistinctAndInvertible(t *testing.T) {
	seen := map[netip.Addr]bool{}
	for _, i := range []int{0, 1, 254, 255, 256, 65535, 65536, 99999, 199999} {
		v, u := HostVPN(i), HostUnderlay(i)
		if !VPNNet.Contains(v) || v == LighthouseVPN || v == PlainHostVPN {
			t.Errorf("host %d: VPN %s", i, v)
		}
		if !u.IsLoopback() || u == netip.MustParseAddr("127.0.0.1") || seen[u] {
			t.Errorf("host %d: underlay %s (loopback, not 127.0.0.1, unique)", i, u)
		}
		seen[u] = true
		if got := hostIndex(v); got != i {
			t.Errorf("hostIndex(%s) = %d, want %d", v, got, i)
		}
	}
	if hostIndex(netip.MustParseAddr("192.168.0.1")) != -1 {
		t.Error("an address outside the VPN maps to a host")
	}
}

func TestLoadCachesHostsAndRepairsATruncatedFile(t *testing.T) {
	dir := t.TempDir()
	p, err := Load(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CACertFile, "lighthouse.crt", "lighthouse.key", "host.crt", "host.key", hostsFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	// A half-written record (an interrupted run) is cut off, the rest kept and extended.
	path := filepath.Join(dir, hostsFile)
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()-10); err != nil {
		t.Fatal(err)
	}
	q, err := Load(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Hosts) != 8 || q.CA.Fingerprint() != p.CA.Fingerprint() {
		t.Fatalf("got %d hosts, CA %s; want 8 under %s", len(q.Hosts), q.CA.Fingerprint(), p.CA.Fingerprint())
	}
	for i := range 4 {
		if q.Hosts[i].Cert.Fingerprint() != p.Hosts[i].Cert.Fingerprint() {
			t.Errorf("host %d changed across loads", i)
		}
	}
	for i, h := range q.Hosts {
		if _, err := q.Pool.Verify(h.Cert, time.Now()); err != nil {
			t.Errorf("host %d: %v", i, err)
		}
		if h.Cert.VpnIP() != HostVPN(i) {
			t.Errorf("host %d has %s, want %s", i, h.Cert.VpnIP(), HostVPN(i))
		}
		if err := h.Cert.VerifyPrivateKey(h.Key); err != nil {
			t.Errorf("host %d: %v", i, err)
		}
	}
}

func TestParseStatCPUCountsFieldsAfterTheCommandName(t *testing.T) {
	// utime 250 and stime 50 ticks; the command name holds a space and a parenthesis.
	stat := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
	got, err := parseStatCPU([]byte(stat))
	if err != nil || got != 3.0 {
		t.Fatalf("parseStatCPU = %v, %v; want 3 s", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1")); err == nil {
		t.Fatal("a short stat line was accepted")
	}
	s, err := ReadProc(os.Getpid())
	if err != nil || s.RSSKB <= 0 || s.HWMKB < s.RSSKB {
		t.Fatalf("ReadProc(self) = %+v, %v", s, err)
	}
}

func TestLatencyQuantilesAreNearestRank(t *testing.T) {
	l := newLatencies(100)
	for i := 100; i >= 1; i-- {
		l.add(time.Duration(i) * time.Millisecond)
	}
	if l.ms(0.5) != 50 || l.ms(0.99) != 99 || l.ms(1) != 100 {
		t.Fatalf("p50 %v p99 %v p100 %v", l.ms(0.5), l.ms(0.99), l.ms(1))
	}
	if newLatencies(0).ms(0.5) != 0 {
		t.Fatal("no samples should give 0")
	}
}

func TestRampStepFallsBehindWhenLateFailedOrSlow(t *testing.T) {
	for _, c := range []struct {
		s    JoinStats
		want bool
	}{
		{JoinStats{Hosts: 1000, Joined: 1000, Offered: 500, Rate: 495}, false},
		{JoinStats{Hosts: 1000, Joined: 1000, Offered: 500, Rate: 495, Late: 11}, true},
		{JoinStats{Hosts: 1000, Joined: 999, Failed: 1, Offered: 500, Rate: 495}, true},
		{JoinStats{Hosts: 1000, Joined: 1000, Offered: 500, Rate: 400}, true},
	} {
		if got := c.s.Behind(); got != c.want {
			t.Errorf("%+v: Behind = %v", c.s, got)
		}
	}
}

// fakeLighthouse is a minimal responder on loopback: it answers msg 1 with the handshake
// package, files each host's update and answers queries from that book, and sends every new
// tunnel one Test request, so the generator can be tested without a daemon or root.
type fakeLighthouse struct {
	conn    *net.UDPConn
	cfg     *handshake.Config
	mu      sync.Mutex
	tunnels map[uint32]*fakeTunnel // by our index
	book    map[netip.Addr][]netip.AddrPort
	replies int // Test replies received
}

type fakeTunnel struct {
	res     *handshake.Result
	from    netip.AddrPort
	counter uint64
}

func startFake(t *testing.T, p *PKI) *fakeLighthouse {
	t.Helper()
	lh, err := p.sign("lighthouse", LighthouseVPN)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := handshake.NewCredentials(lh.Cert, lh.Key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLighthouse{conn: conn, cfg: &handshake.Config{Local: creds, Pool: p.Pool},
		tunnels: map[uint32]*fakeTunnel{}, book: map[netip.Addr][]netip.AddrPort{}}
	go f.serve()
	t.Cleanup(func() { conn.Close() })
	return f
}

func (f *fakeLighthouse) addr() netip.AddrPort {
	return f.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (f *fakeLighthouse) send(tu *fakeTunnel, typ header.Type, sub uint8, payload []byte) {
	tu.counter++
	pkt := header.Encode(make([]byte, header.Len), typ, sub, tu.res.RemoteIndex, tu.counter)
	pkt = tu.res.Send.Seal(pkt, pkt, payload, tu.counter)
	f.conn.WriteToUDPAddrPort(pkt, tu.from)
}

func (f *fakeLighthouse) serve() {
	buf := make([]byte, 2000)
	var h header.Header
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkt := buf[:n]
		if h.Parse(pkt) != nil {
			continue
		}
		f.mu.Lock()
		switch h.Type {
		case header.Handshake:
			in, err := handshake.ReadInit(f.cfg, pkt)
			if err != nil {
				break
			}
			idx := uint32(len(f.tunnels) + 1)
			res, msg2, err := in.Respond(idx)
			if err != nil {
				break
			}
			tu := &fakeTunnel{res: res, from: from, counter: 2}
			f.tunnels[idx] = tu
			f.conn.WriteToUDPAddrPort(msg2, from)
			f.send(tu, header.Test, header.SubtypeTestRequest, []byte("ping"))
		case header.Test, header.LightHouse:
			tu := f.tunnels[h.RemoteIndex]
			if tu == nil {
				break
			}
			pt, err := tu.res.Recv.Open(nil, pkt[:header.Len], pkt[header.Len:], h.Counter)
			if err != nil {
				break
			}
			if h.Type == header.Test {
				if h.Subtype == header.SubtypeTestReply && string(pt) == "ping" {
					f.replies++
				}
				break
			}
			var m lighthouse.Meta
			if lighthouse.Unmarshal(pt, &m) != nil {
				break
			}
			switch m.Type {
			case lighthouse.HostUpdateNotification:
				if m.VpnIP == tu.res.PeerCert.VpnIP() {
					f.book[m.VpnIP] = append(m.V4, from)
				}
			case lighthouse.HostQuery:
				r := lighthouse.Meta{Type: lighthouse.HostQueryReply, VpnIP: m.VpnIP, V4: f.book[m.VpnIP]}
				f.send(tu, header.LightHouse, 0, r.Marshal(nil))
			}
		}
		f.mu.Unlock()
	}
}

func TestFleetJoinsAFakeLighthouseAndQueriesItsBook(t *testing.T) {
	p, err := Load(t.TempDir(), 60)
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, p)
	s, err := New(Options{Target: f.addr(), PKI: p, Sockets: 3, Lighthouse: true, RetryAfter: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var last int
	var mu sync.Mutex
	st := s.Join(context.Background(), 0, 60, 16, 0, func(n int) { mu.Lock(); last = max(last, n); mu.Unlock() })
	if st.Joined != 60 || st.Failed != 0 || last != 60 {
		t.Fatalf("join: %+v, progress reached %d", st, last)
	}
	for i := range 60 {
		if !s.Up(i) {
			t.Fatalf("host %d is not up", i)
		}
	}
	// Every host's update reaches the book, from its own address and port.
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.book) == 60 && f.replies == 60 })
	f.mu.Lock()
	for i := range 60 {
		if got := f.book[HostVPN(i)]; len(got) != 2 || got[0] != s.Addr(i) || got[1] != s.Addr(i) {
			t.Errorf("book[%s] = %v, want the host's own %s (reported and seen)", HostVPN(i), got, s.Addr(i))
		}
	}
	f.mu.Unlock()
	if s.C.TestRequests.Load() != 60 {
		t.Errorf("answered %d Test requests, want 60", s.C.TestRequests.Load())
	}
	up := make([]int, 60)
	for i := range up {
		up[i] = i
	}
	q := s.Query(context.Background(), up, 400, 500*time.Millisecond, time.Second)
	if q.Sent < 100 || q.Answered != q.Sent || q.Correct != q.Answered || q.TimedOut != 0 {
		t.Fatalf("queries: %+v", q)
	}
	if q.P50ms <= 0 || q.P99ms < q.P50ms || q.P99ms > 500 {
		t.Fatalf("query latency p50 %.3f ms, p99 %.3f ms", q.P50ms, q.P99ms)
	}
	if err := s.start(3, nil); err == nil {
		t.Error("a joined host started a second handshake")
	}
}

func TestAHandshakeNobodyAnswersIsRetriedThenFails(t *testing.T) {
	p, err := Load(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	// A socket that reads nothing: every msg 1 goes unanswered.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s, err := New(Options{Target: silent.LocalAddr().(*net.UDPAddr).AddrPort(), PKI: p, RetryAfter: 20 * time.Millisecond, Tries: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st := s.Join(context.Background(), 0, 2, 2, 0, nil)
	if st.Joined != 0 || st.Failed != 2 || st.Retries != 4 {
		t.Fatalf("join: %+v; want 2 failed after 2 retransmissions each", st)
	}
	var got int
	buf := make([]byte, 2000)
	silent.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, err := silent.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != 6 {
		t.Fatalf("the target got %d msg 1, want 3 per host", got)
	}
}

func TestTablesShowEveryKindOfRun(t *testing.T) {
	j := JoinStats{Hosts: 10, Joined: 10, Seconds: 1, Rate: 10, CPU: 0.5}
	rs := []Result{
		{Target: "a", Mode: "lighthouse", Base: ProcSample{RSSKB: 1000}, Join: &j,
			Milestones: []Milestone{{Hosts: 10, Seconds: 1, Proc: ProcSample{CPU: 0.5, RSSKB: 1100}}},
			Query:      &QueryStats{Offered: 5, Rate: 5, Answered: 5, Correct: 5, P50ms: 0.1, P99ms: 0.2, CPU: 0.01}},
		{Target: "a", Mode: "lighthouse", Ramp: []JoinStats{{Hosts: 10, Joined: 10, Offered: 10, Rate: 10, Seconds: 1, CPU: 0.1}}},
		{Target: "a", Mode: "host", Base: ProcSample{RSSKB: 1000}, Join: &j, Idle: &IdleStats{Seconds: 10, CPU: 0.2, Proc: ProcSample{RSSKB: 1200}}},
	}
	out := Tables(rs)
	for _, want := range []string{"| a | 10 | 1.0 | 10 | 0.5 | 20 |", "10.00 |", "| a | 10 | 10 | 100 |", "| 5 of 5 |", "| a | 10 | 1.0 | 1.2 | 0.0 | 20.00 | 2.00 | 10 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5 s")
}

func TestRcvbufErrorsAreReadByColumnName(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 100 2 7 90 5 0\nUdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 9\n"
	if got, err := parseRcvbufErrors([]byte(snmp)); err != nil || got != 5 {
		t.Fatalf("parseRcvbufErrors = %d, %v; want 5", got, err)
	}
	if _, err := parseRcvbufErrors([]byte("Ip: a\nIp: 1\n")); err == nil {
		t.Fatal("no Udp line was accepted")
	}
	if _, err := UDPRcvbufErrors(); err != nil {
		t.Fatal(err)
	}
}
