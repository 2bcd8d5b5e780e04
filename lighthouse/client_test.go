package lighthouse

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"testing"
)

var (
	lh1 = netip.MustParseAddr("10.99.0.100")
	lh2 = netip.MustParseAddr("10.99.0.101")
)

func reply(vpn netip.Addr, v4, v6 []netip.AddrPort, relays ...netip.Addr) *Meta {
	return &Meta{Type: HostQueryReply, VpnIP: vpn, V4: v4, V6: v6, Relays: relays}
}

func TestSortCandidatesOrdersLikeNebula(t *testing.T) {
	tests := []struct {
		name      string
		in        []netip.AddrPort
		preferred []netip.Prefix
		want      []netip.AddrPort
	}{
		{"ipv6 before public v4 before private v4",
			aps("192.168.1.5:4242", "198.51.100.7:4242", "[2001:db8::1]:4242", "10.1.1.1:4242"), nil,
			aps("[2001:db8::1]:4242", "198.51.100.7:4242", "10.1.1.1:4242", "192.168.1.5:4242")},
		{"preferred ranges first, ordered the same way inside",
			aps("198.51.100.7:4242", "192.168.1.9:1", "[2001:db8::1]:4242", "192.168.1.5:4242"),
			[]netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
			aps("192.168.1.5:4242", "192.168.1.9:1", "[2001:db8::1]:4242", "198.51.100.7:4242")},
		{"then IP, then port",
			aps("198.51.100.7:5", "198.51.100.7:1", "198.51.100.2:9"), nil,
			aps("198.51.100.2:9", "198.51.100.7:1", "198.51.100.7:5")},
		{"duplicates and mapped forms collapse",
			aps("198.51.100.7:4242", "[::ffff:198.51.100.7]:4242", "198.51.100.7:4242"), nil,
			aps("198.51.100.7:4242")},
		{"empty", nil, nil, []netip.AddrPort{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]netip.AddrPort(nil), tc.in...)
			got := SortCandidates(in, tc.preferred)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			if !reflect.DeepEqual(in, tc.in) {
				t.Fatal("input modified")
			}
		})
	}
}

func TestRemotesEachLighthouseReplacesOnlyItsOwnContribution(t *testing.T) {
	static := aps("203.0.113.10:4242")
	r := NewRemotes(hostB, static, RemotesOptions{OwnVPNNet: lhNet})
	if err := r.Apply(lh1, reply(hostB, aps("198.51.100.1:1", "203.0.113.10:4242"), nil, hostC)); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(lh2, reply(hostB, aps("198.51.100.2:2"), aps("[2001:db8::2]:2"))); err != nil {
		t.Fatal(err)
	}
	want := aps("[2001:db8::2]:2", "198.51.100.1:1", "198.51.100.2:2", "203.0.113.10:4242")
	if got := r.Candidates(nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// lh1 now knows only a new address; lh2's and the static entry stay.
	_ = r.Apply(lh1, reply(hostB, aps("198.51.100.9:9"), nil))
	want = aps("[2001:db8::2]:2", "198.51.100.2:2", "198.51.100.9:9", "203.0.113.10:4242")
	if got := r.Candidates(nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("after lh1's second reply got %v\nwant %v", got, want)
	}
	if got := r.Relays(); len(got) != 0 {
		t.Fatalf("relays %v survived lh1's replacement", got)
	}
	// Even an empty reply from every lighthouse never removes the static entry.
	_ = r.Apply(lh1, reply(hostB, nil, nil))
	r.ForgetLighthouse(lh2)
	if got := r.Candidates(nil); !reflect.DeepEqual(got, static) {
		t.Fatalf("got %v, want only the static entry", got)
	}
}

func TestRemotesRefusesRepliesForOtherHostsOrTypes(t *testing.T) {
	r := NewRemotes(hostB, nil, RemotesOptions{})
	if err := r.Apply(lh1, reply(hostC, aps("198.51.100.1:1"), nil)); !errors.Is(err, ErrWrongHost) {
		t.Fatalf("reply about another host: %v", err)
	}
	m := reply(hostB, aps("198.51.100.1:1"), nil)
	m.Type = HostPunchNotification
	if err := r.Apply(lh1, m); !errors.Is(err, ErrNotReply) {
		t.Fatalf("punch notification taken as a reply: %v", err)
	}
	if got := r.Candidates(nil); len(got) != 0 {
		t.Fatalf("refused replies left candidates %v", got)
	}
}

// A lighthouse reply with a mapped address of a denied range is never dialled (Nebula #1786).
func TestRemotesFilterRepliesLikeTheLighthouse(t *testing.T) {
	allow, err := ParseRemoteAllowList("r", yamlNode(t, `{"0.0.0.0/0": true, "172.16.0.0/12": false}`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRemotes(hostB, nil, RemotesOptions{OwnVPNNet: lhNet, RemoteAllowList: allow})
	_ = r.Apply(lh1, reply(hostB,
		aps("172.16.5.5:1", "10.99.0.2:4242", "127.0.0.1:4242", "198.51.100.1:1"),
		aps("[::ffff:172.16.5.5]:1", "[::ffff:198.51.100.3]:3", "[fe80::1]:1")))
	want := aps("198.51.100.1:1", "198.51.100.3:3")
	if got := r.Candidates(nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	var many []netip.AddrPort
	for i := 1; i <= 20; i++ {
		many = append(many, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 1))
	}
	_ = r.Apply(lh1, reply(hostB, many, nil))
	if got := r.Candidates(nil); len(got) != DefaultMaxPerFamily {
		t.Fatalf("kept %d addresses from one lighthouse, want %d", len(got), DefaultMaxPerFamily)
	}
	loop := NewRemotes(hostB, nil, RemotesOptions{AllowLoopback: true})
	_ = loop.Apply(lh1, reply(hostB, aps("127.0.0.1:4242"), nil))
	if got := loop.Candidates(nil); len(got) != 1 {
		t.Fatalf("AllowLoopback dropped loopback: %v", got)
	}
}

func TestRemotesIsSafeForConcurrentUse(t *testing.T) {
	r := NewRemotes(hostB, aps("203.0.113.10:4242"), RemotesOptions{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			lh := netip.AddrFrom4([4]byte{10, 99, 0, byte(100 + g)})
			for i := 0; i < 200; i++ {
				_ = r.Apply(lh, reply(hostB, aps("198.51.100.1:1"), nil, hostC))
				if len(r.Candidates(nil)) < 1 || len(r.Relays()) > 1 {
					t.Error("inconsistent view")
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestHostUpdateBuildsTheReport(t *testing.T) {
	allow, err := ParseLocalAllowList("l", yamlNode(t, `{"192.168.99.0/24": false}`))
	if err != nil {
		t.Fatal(err)
	}
	got := HostUpdate(hostA,
		aps("203.0.113.1:0", "203.0.113.2:5000", "10.99.0.50:4242", "[::ffff:198.51.100.9]:0"),
		[]netip.Addr{
			netip.MustParseAddr("192.168.1.5"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
			netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("169.254.0.3"), netip.MustParseAddr("10.99.0.1"),
			netip.MustParseAddr("192.168.99.7"), netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("203.0.113.1"),
		},
		4242, lhNet, allow, []netip.Addr{hostC})
	want := &Meta{Type: HostUpdateNotification, VpnIP: hostA,
		V4:     aps("203.0.113.1:4242", "203.0.113.2:5000", "198.51.100.9:4242", "192.168.1.5:4242"),
		V6:     aps("[2001:db8::5]:4242"),
		Relays: []netip.Addr{hostC}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// What the client builds, a meshnode lighthouse stores unchanged.
	b := NewBook(BookOptions{OwnVPNNet: lhNet})
	var decoded Meta
	if err := Unmarshal(got.Marshal(nil), &decoded); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(hostA, netip.AddrPort{}, &decoded); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.Lookup(hostA); !reflect.DeepEqual(r.V4, want.V4) || !reflect.DeepEqual(r.V6, want.V6) {
		t.Fatalf("book kept %v %v", r.V4, r.V6)
	}
}

func TestHostUpdateCapsAtWhatALighthouseKeeps(t *testing.T) {
	var local []netip.Addr
	for i := 1; i <= 40; i++ {
		local = append(local, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	m := HostUpdate(hostA, nil, local, 4242, lhNet, nil, nil)
	if len(m.V4) != DefaultMaxPerFamily || m.V4[0].Addr() != local[0] {
		t.Fatalf("%d v4 entries, want the first %d", len(m.V4), DefaultMaxPerFamily)
	}
}

func TestLocalAddrsAppliesInterfaceRules(t *testing.T) {
	allow, err := ParseLocalAllowList("l", yamlNode(t, `{interfaces: {'docker.*': false}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := LocalAddrs([]Interface{
		{"eth0", []netip.Addr{netip.MustParseAddr("192.168.1.5")}},
		{"docker0", []netip.Addr{netip.MustParseAddr("172.17.0.1")}},
	}, allow)
	if want := []netip.Addr{netip.MustParseAddr("192.168.1.5")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func BenchmarkSortCandidates(b *testing.B) {
	in := aps("192.168.1.5:4242", "198.51.100.7:4242", "[2001:db8::1]:4242", "10.1.1.1:4242",
		"203.0.113.1:1", "[2001:db8::2]:1", "198.51.100.7:4242")
	pref := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		SortCandidates(in, pref)
	}
}

// What HostUpdate builds for the host of the captured 1.6.1 update encodes to the same bytes.
func TestHostUpdateEncodesLikeARealNode(t *testing.T) {
	m := HostUpdate(netip.MustParseAddr("10.99.0.1"), nil,
		[]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("2001:db8::1")},
		4242, lhNet, nil, nil)
	if got, want := m.Marshal(nil), unhex(t, goldenUpdate); !bytes.Equal(got, want) {
		t.Fatalf("got %x\nwant %x", got, want)
	}
}

func TestRemotesStaticIsACopy(t *testing.T) {
	r := NewRemotes(hostB, aps("[::ffff:203.0.113.10]:4242"), RemotesOptions{})
	s := r.Static()
	if want := aps("203.0.113.10:4242"); !reflect.DeepEqual(s, want) {
		t.Fatalf("Static = %v, want the unmapped %v", s, want)
	}
	s[0] = netip.MustParseAddrPort("1.1.1.1:1")
	if r.Static()[0] == s[0] {
		t.Fatal("Static shares memory with Remotes")
	}
}
