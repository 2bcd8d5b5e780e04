package lighthouse

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	lhNet  = netip.MustParsePrefix("10.99.0.0/16")
	hostA  = netip.MustParseAddr("10.99.0.1")
	hostB  = netip.MustParseAddr("10.99.0.2")
	hostC  = netip.MustParseAddr("10.99.0.3")
	fromA  = netip.MustParseAddrPort("198.51.100.7:4242")
	fromB  = netip.MustParseAddrPort("[2001:db8::b]:4242")
	report = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:4242"), netip.MustParseAddrPort("192.168.1.5:4242")}
)

func aps(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

func update(vpn netip.Addr, v4, v6 []netip.AddrPort, relays ...netip.Addr) *Meta {
	return &Meta{Type: HostUpdateNotification, VpnIP: vpn, V4: v4, V6: v6, Relays: relays}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)} }

func TestLookupAnswersLearnedFirstThenReportedWithDuplicates(t *testing.T) {
	b := NewBook(BookOptions{OwnVPNNet: lhNet})
	relay := netip.MustParseAddr("10.99.0.9")
	if err := b.Update(hostA, fromA, update(hostA, report, aps("[2001:db8::a]:4242"), relay)); err != nil {
		t.Fatal(err)
	}
	got, ok := b.Lookup(hostA)
	if !ok {
		t.Fatal("known host not found")
	}
	want := &Meta{Type: HostQueryReply, VpnIP: hostA,
		V4:     aps("198.51.100.7:4242", "198.51.100.7:4242", "192.168.1.5:4242"),
		V6:     aps("[2001:db8::a]:4242"),
		Relays: []netip.Addr{relay}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, ok := b.Lookup(hostB); ok {
		t.Fatal("unknown host answered; a 1.6 lighthouse stays silent")
	}
}

func TestUpdateForAnotherHostIsRefused(t *testing.T) {
	b := NewBook(BookOptions{})
	if err := b.Update(hostA, fromA, update(hostA, report, nil)); err != nil {
		t.Fatal(err)
	}
	before, _ := b.Lookup(hostA)
	// B, with a valid tunnel, claims to be A.
	err := b.Update(hostB, fromB, update(hostA, aps("203.0.113.66:1"), nil))
	if !errors.Is(err, ErrWrongHost) {
		t.Fatalf("err = %v, want ErrWrongHost", err)
	}
	after, _ := b.Lookup(hostA)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("victim's entry changed: %+v", after)
	}
	if err := b.Update(hostA, fromA, &Meta{Type: HostQuery, VpnIP: hostA}); !errors.Is(err, ErrNotUpdate) {
		t.Fatalf("query taken as update: %v", err)
	}
}

func TestUpdateReplacesThePreviousReport(t *testing.T) {
	b := NewBook(BookOptions{})
	_ = b.Update(hostA, fromA, update(hostA, report, aps("[2001:db8::a]:1"), hostC))
	_ = b.Update(hostA, fromA, update(hostA, aps("203.0.113.1:5"), nil))
	got, _ := b.Lookup(hostA)
	if want := aps("198.51.100.7:4242", "203.0.113.1:5"); !reflect.DeepEqual(got.V4, want) || got.V6 != nil || got.Relays != nil {
		t.Fatalf("got %+v, want only the learned address and the new report", got)
	}
}

func TestUpdateFiltersReportedAddresses(t *testing.T) {
	denyNet, err := ParseRemoteAllowList("r", yamlNode(t, `{"0.0.0.0/0": true, "203.0.113.0/24": false}`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		v4, v6   []netip.AddrPort
		want4    []netip.AddrPort
		want6    []netip.AddrPort
		wantRely []netip.Addr
		relays   []netip.Addr
	}{
		{name: "own vpn range dropped", v4: aps("10.99.3.3:4242", "192.0.2.1:4242"), want4: aps("192.0.2.1:4242")},
		{name: "denied by allow list", v4: aps("203.0.113.5:4242", "192.0.2.1:4242"), want4: aps("192.0.2.1:4242")},
		{name: "mapped address unmapped before the allow list (nebula #1786)",
			v6: aps("[::ffff:203.0.113.5]:4242", "[::ffff:192.0.2.1]:4242"), want4: aps("192.0.2.1:4242")},
		{name: "mapped address of own vpn range dropped", v6: aps("[::ffff:10.99.0.7]:4242")},
		{name: "unusable addresses dropped",
			v4:    aps("0.0.0.0:4242", "127.0.0.1:4242", "224.0.0.1:4242", "255.255.255.255:4242", "169.254.1.1:4242", "192.0.2.1:0"),
			v6:    aps("[::]:4242", "[::1]:4242", "[ff02::1]:4242", "[fe80::1]:4242", "[2001:db8::1]:4242"),
			want6: aps("[2001:db8::1]:4242")},
		{name: "relays: self, outside the network and non-v4 dropped",
			relays:   []netip.Addr{hostA, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), hostC},
			wantRely: []netip.Addr{hostC}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBook(BookOptions{OwnVPNNet: lhNet, RemoteAllowList: denyNet})
			if err := b.Update(hostA, netip.AddrPort{}, update(hostA, tc.v4, tc.v6, tc.relays...)); err != nil {
				t.Fatal(err)
			}
			got, _ := b.Lookup(hostA)
			if !reflect.DeepEqual(got.V4, tc.want4) || !reflect.DeepEqual(got.V6, tc.want6) || !reflect.DeepEqual(got.Relays, tc.wantRely) {
				t.Fatalf("got v4 %v v6 %v relays %v\nwant v4 %v v6 %v relays %v", got.V4, got.V6, got.Relays, tc.want4, tc.want6, tc.wantRely)
			}
		})
	}
}

func TestUpdateCapsEachFamily(t *testing.T) {
	b := NewBook(BookOptions{})
	var v4, v6 []netip.AddrPort
	var relays []netip.Addr
	for i := 1; i <= 30; i++ {
		v4 = append(v4, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1))
		v6 = append(v6, netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 1))
		relays = append(relays, netip.AddrFrom4([4]byte{10, 99, 1, byte(i)}))
	}
	_ = b.Update(hostA, netip.AddrPort{}, update(hostA, v4, v6, relays...))
	got, _ := b.Lookup(hostA)
	if len(got.V4) != 10 || len(got.V6) != 10 || len(got.Relays) != 10 || got.V4[0] != v4[0] {
		t.Fatalf("kept %d v4, %d v6, %d relays; want the first 10 of each", len(got.V4), len(got.V6), len(got.Relays))
	}
}

func TestPunchNotificationCarriesTheQuerier(t *testing.T) {
	b := NewBook(BookOptions{})
	_ = b.Update(hostB, fromB, update(hostB, aps("192.0.2.2:4242"), nil))
	m, ok := b.PunchNotification(hostB)
	want := &Meta{Type: HostPunchNotification, VpnIP: hostB, V4: aps("192.0.2.2:4242"), V6: []netip.AddrPort{fromB}}
	if !ok || !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v, %v\nwant %+v", m, ok, want)
	}
	if _, ok := b.PunchNotification(hostC); ok {
		t.Fatal("punch notification for an unknown querier")
	}
}

func TestEntriesExpireAfterTTLAndCanBeForgotten(t *testing.T) {
	clk := newClock()
	b := NewBook(BookOptions{Now: clk.Now, TTL: 30 * time.Second})
	_ = b.Update(hostA, fromA, update(hostA, nil, nil))
	_ = b.Update(hostB, fromB, update(hostB, nil, nil))
	clk.Advance(20 * time.Second)
	_ = b.Update(hostB, fromB, update(hostB, nil, nil)) // B refreshes, A does not
	clk.Advance(15 * time.Second)
	if _, ok := b.Lookup(hostA); ok {
		t.Fatal("stale host answered before the sweep")
	}
	if _, ok := b.Lookup(hostB); !ok {
		t.Fatal("refreshed host lost")
	}
	if n := b.Expire(); n != 1 || b.Len() != 1 {
		t.Fatalf("Expire = %d, Len = %d; want 1, 1", n, b.Len())
	}
	b.Forget(hostB)
	if b.Len() != 0 {
		t.Fatal("Forget left the host")
	}
	never := NewBook(BookOptions{Now: clk.Now})
	_ = never.Update(hostA, fromA, update(hostA, nil, nil))
	clk.Advance(1000 * time.Hour)
	if _, ok := never.Lookup(hostA); !ok || never.Expire() != 0 {
		t.Fatal("TTL 0 must never expire")
	}
}

func TestLookupResultIsTheCallersToModify(t *testing.T) {
	b := NewBook(BookOptions{})
	_ = b.Update(hostA, fromA, update(hostA, report, nil, hostC))
	m, _ := b.Lookup(hostA)
	m.V4[0] = netip.MustParseAddrPort("1.1.1.1:1")
	m.Relays[0] = hostB
	again, _ := b.Lookup(hostA)
	if again.V4[0] != fromA || again.Relays[0] != hostC {
		t.Fatal("a reply shares memory with the book")
	}
}

func TestBookIsSafeForConcurrentUse(t *testing.T) {
	b := NewBook(BookOptions{TTL: time.Minute})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				vpn := netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)})
				_ = b.Update(vpn, fromA, update(vpn, report, nil))
				b.Lookup(vpn)
				b.PunchNotification(vpn)
				if i%50 == 0 {
					b.Forget(vpn)
					b.Expire()
				}
			}
		}(g)
	}
	wg.Wait()
	if b.Len() != 4*(500-10) {
		t.Fatalf("Len = %d, want %d", b.Len(), 4*490)
	}
}

func fillBook(b *Book, n int) []netip.Addr {
	hosts := make([]netip.Addr, n)
	for i := range hosts {
		vpn := netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)})
		hosts[i] = vpn
		learned := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 4242)
		_ = b.Update(vpn, learned, update(vpn,
			[]netip.AddrPort{learned, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), 4242)},
			[]netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), 4242)}))
	}
	return hosts
}

// BenchmarkBook10kHosts: a lighthouse with 10,000 hosts, each with two IPv4 and one IPv6
// address. Reports lookups per second per core and the book's bytes per host.
func BenchmarkBook10kHosts(b *testing.B) {
	const n = 10000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	book := NewBook(BookOptions{OwnVPNNet: netip.MustParsePrefix("10.100.0.0/16")})
	hosts := fillBook(book, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perHost := float64(after.HeapAlloc-before.HeapAlloc) / n
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		m, ok := book.Lookup(hosts[i%n])
		if !ok {
			b.Fatal("missing host")
		}
		buf = m.Marshal(buf[:0])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
	b.ReportMetric(perHost, "bytes/host") // after the loop: ResetTimer clears metrics
	runtime.KeepAlive(book)
}

func BenchmarkBookUpdate(b *testing.B) {
	book := NewBook(BookOptions{})
	m := update(hostA, report, aps("[2001:db8::a]:4242"))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := book.Update(hostA, fromA, m); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleBook() {
	book := NewBook(BookOptions{OwnVPNNet: netip.MustParsePrefix("10.99.0.0/16")})
	a := netip.MustParseAddr("10.99.0.1")
	_ = book.Update(a, netip.MustParseAddrPort("198.51.100.7:4242"), &Meta{
		Type: HostUpdateNotification, VpnIP: a,
		V4: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.5:4242"), netip.MustParseAddrPort("10.99.0.1:4242")},
	})
	reply, _ := book.Lookup(a)
	fmt.Println(reply.Type, reply.VpnIP, reply.V4)
	// Output: HostQueryReply 10.99.0.1 [198.51.100.7:4242 192.168.1.5:4242]
}

// BenchmarkBook10kHostsParallel: lookups from every core at once, as query handlers on
// several UDP queues would run them; the book takes only a read lock.
func BenchmarkBook10kHostsParallel(b *testing.B) {
	const n = 10000
	book := NewBook(BookOptions{OwnVPNNet: netip.MustParsePrefix("10.100.0.0/16")})
	hosts := fillBook(book, n)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 512)
		i := 0
		for pb.Next() {
			m, _ := book.Lookup(hosts[i%n])
			buf = m.Marshal(buf[:0])
			i++
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}

func TestUsableRejectsAddressesNoPeerCanBeReachedAt(t *testing.T) {
	for s, want := range map[string]bool{
		"198.51.100.7:4242": true, "[2001:db8::1]:4242": true, "[::ffff:198.51.100.7]:1": true,
		"192.168.1.1:1": true, "198.51.100.7:0": false, "0.0.0.0:1": false, "[::]:1": false,
		"127.0.0.1:1": false, "[::1]:1": false, "[::ffff:127.0.0.1]:1": false, "224.0.0.1:1": false,
		"[ff02::1]:1": false, "169.254.0.1:1": false, "[fe80::1]:1": false, "[fe80::1%eth0]:1": false,
		"255.255.255.255:1": false,
	} {
		if got := Usable(netip.MustParseAddrPort(s)); got != want {
			t.Errorf("Usable(%s) = %v, want %v", s, got, want)
		}
	}
	if Usable(netip.AddrPort{}) {
		t.Error("zero AddrPort usable")
	}
}

// bookHost is the i-th of many hosts in a /8.
func bookHost(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestExpireKeepsOneRecordPerHostAcrossRefreshesAndRejoins(t *testing.T) {
	clk := newClock()
	b := NewBook(BookOptions{Now: clk.Now, TTL: 30 * time.Second})
	const hosts = 100
	for round := range 20 {
		for i := range hosts {
			h := bookHost(i)
			if round%3 == 2 && i%2 == 0 {
				b.Forget(h) // a tunnel that closed and came back
			}
			_ = b.Update(h, fromA, update(h, nil, nil))
		}
		clk.Advance(10 * time.Second)
		if n := b.Expire(); n != 0 {
			t.Fatalf("round %d: %d hosts that keep reporting expired", round, n)
		}
	}
	if got := b.expiry.Len(); got > hosts+hosts/2 {
		t.Errorf("%d expiry records for %d hosts: forgotten hosts' records pile up", got, hosts)
	}
	// Half the hosts stop reporting: exactly they go, once the TTL is over.
	for i := range hosts / 2 {
		_ = b.Update(bookHost(i), fromA, update(bookHost(i), nil, nil))
	}
	clk.Advance(25 * time.Second)
	for i := range hosts / 2 {
		_ = b.Update(bookHost(i), fromA, update(bookHost(i), nil, nil))
	}
	clk.Advance(10 * time.Second)
	if n := b.Expire(); n != hosts/2 || b.Len() != hosts/2 {
		t.Fatalf("Expire = %d, Len = %d; want %d, %d", n, b.Len(), hosts/2, hosts/2)
	}
	if _, ok := b.Lookup(bookHost(0)); !ok {
		t.Error("a host that kept reporting is gone")
	}
	if got := b.expiry.Len(); got != hosts/2 {
		t.Errorf("%d expiry records left for %d hosts", got, hosts/2)
	}
}

// BenchmarkBookExpire is one lighthouse tick's sweep of a book of N hosts that all report
// every 10 s (the default lighthouse.interval), one second of updates between sweeps: its
// cost per op must not grow with N beyond what is due.
func BenchmarkBookExpire(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			clk := newClock()
			book := NewBook(BookOptions{Now: clk.Now, TTL: 3 * time.Minute})
			for i := range n {
				_ = book.Update(bookHost(i), fromA, update(bookHost(i), nil, nil))
			}
			next := 0
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				clk.Advance(time.Second)
				for range n / 10 { // a tenth of the hosts report each second
					h := bookHost(next % n)
					_ = book.Update(h, fromA, update(h, nil, nil))
					next++
				}
				b.StartTimer()
				if book.Expire() != 0 {
					b.Fatal("a reporting host expired")
				}
			}
		})
	}
}

// TestBookMemoryPerHost: the book's share of issue 18's per-host budget.
func TestBookMemoryPerHost(t *testing.T) {
	const n = 10000
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	b := NewBook(BookOptions{TTL: 3 * time.Minute})
	before := heap()
	for i := range n {
		h := bookHost(i)
		_ = b.Update(h, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 4242),
			update(h, aps("192.168.1.5:4242"), nil))
	}
	per := float64(heap()-before) / n
	t.Logf("book: %.0f bytes per host", per)
	if per > 600 {
		t.Errorf("the book holds %.0f bytes per host, want at most 600", per)
	}
	runtime.KeepAlive(b)
}

// An update that repeats the host's addresses refreshes its entry in place; racing with
// the sweep that finds the entry stale, it must never be lost: either the sweep sees the
// refresh, or the update stores the host again after the sweep dropped it.
func TestRepeatedUpdateRacingTheSweepIsNeverLost(t *testing.T) {
	for i := range 300 {
		clk := newClock()
		b := NewBook(BookOptions{Now: clk.Now, TTL: time.Second})
		_ = b.Update(hostA, fromA, update(hostA, report, nil))
		clk.Advance(2 * time.Second)
		var wg sync.WaitGroup
		wg.Go(func() { _ = b.Update(hostA, fromA, update(hostA, report, nil)) })
		wg.Go(func() { b.Expire() })
		wg.Wait()
		if _, ok := b.Lookup(hostA); !ok || b.Len() != 1 {
			t.Fatalf("round %d: a fresh update lost to the sweep (found %v, Len %d)", i, ok, b.Len())
		}
	}
}
