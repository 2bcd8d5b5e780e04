package udptest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var (
	lanA   = netip.MustParsePrefix("10.1.0.0/24")
	lanB   = netip.MustParsePrefix("10.2.0.0/24")
	pubA   = netip.MustParseAddr("198.18.10.1")
	pubB   = netip.MustParseAddr("198.18.20.1")
	hostA  = netip.MustParseAddrPort("10.1.0.5:4242")
	hostA2 = netip.MustParseAddrPort("10.1.0.6:4242")
	hostB  = netip.MustParseAddrPort("10.2.0.5:4242")
	lh     = netip.MustParseAddrPort("198.18.0.100:4242")
)

// punch runs the lighthouse dance: both hosts report to the lighthouse, learn each other's
// public address from what it saw, and send to each other twice. It returns whether each
// side heard the other.
func punch(t *testing.T, kindA, kindB NATKind) (aHeard, bHeard bool) {
	t.Helper()
	n := NewNetwork(1)
	if err := n.AddNAT(lanA, pubA, kindA); err != nil {
		t.Fatal(err)
	}
	if err := n.AddNAT(lanB, pubB, kindB); err != nil {
		t.Fatal(err)
	}
	a, b, l := listen(t, n, hostA), listen(t, n, hostB), listen(t, n, lh)
	send(t, a, lh, "report a")
	send(t, b, lh, "report b")
	_, seen := recv(t, l, 2, time.Second)
	if len(seen) != 2 || seen[0].Addr() != pubA || seen[1].Addr() != pubB {
		t.Fatalf("lighthouse saw %v, want public addresses", seen)
	}
	aPub, bPub := seen[0], seen[1]
	for range 2 {
		send(t, a, bPub, "punch from a")
		send(t, b, aPub, "punch from b")
	}
	gotA, _ := recv(t, a, 1, 50*time.Millisecond)
	gotB, _ := recv(t, b, 1, 50*time.Millisecond)
	return len(gotA) > 0, len(gotB) > 0
}

func TestHolePunchingThroughNATs(t *testing.T) {
	tests := []struct {
		a, b NATKind
		want bool
	}{
		{EasyNAT, EasyNAT, true},
		{FullCone, EasyNAT, true},
		{FullCone, FullCone, true},
		{HardNAT, HardNAT, false},
		{HardNAT, EasyNAT, false}, // b answers a's lighthouse mapping, which only admits the lighthouse
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v-%v", tt.a, tt.b), func(t *testing.T) {
			aHeard, bHeard := punch(t, tt.a, tt.b)
			if aHeard != tt.want || bHeard != tt.want {
				t.Fatalf("a heard b: %v, b heard a: %v; want %v", aHeard, bHeard, tt.want)
			}
		})
	}
}

func TestEasyNATAdmitsOnlyPeersItSentTo(t *testing.T) {
	n := NewNetwork(1)
	n.AddNAT(lanA, pubA, EasyNAT)
	a, l := listen(t, n, hostA), listen(t, n, lh)
	stranger := listen(t, n, addrC)
	send(t, a, lh, "out")
	_, from := recv(t, l, 1, time.Second)
	send(t, stranger, from[0], "unsolicited")
	send(t, l, from[0], "reply")
	if got, src := recv(t, a, 2, 50*time.Millisecond); fmt.Sprint(got) != "[reply]" || src[0] != lh {
		t.Fatalf("a got %v from %v", got, src)
	}
	if s := n.Stats(); s.NATDropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	// A forged datagram still reaches the inside host through the mapping.
	if err := n.Inject(addrC, from[0], []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[forged]" {
		t.Fatalf("inject through NAT: %v", got)
	}
}

func TestTrafficInsideTheNATIsNotTranslated(t *testing.T) {
	n := NewNetwork(1)
	n.AddNAT(lanA, pubA, HardNAT)
	a, a2 := listen(t, n, hostA), listen(t, n, hostA2)
	send(t, a, hostA2, "lan")
	if _, from := recv(t, a2, 1, time.Second); len(from) != 1 || from[0] != hostA {
		t.Fatalf("from %v, want %v", from, hostA)
	}
}

func TestHardNATUsesAPortPerDestination(t *testing.T) {
	n := NewNetwork(1)
	n.AddNAT(lanA, pubA, HardNAT)
	a, l, c := listen(t, n, hostA), listen(t, n, lh), listen(t, n, addrC)
	send(t, a, lh, "1")
	send(t, a, addrC, "2")
	send(t, a, lh, "3")
	_, f1 := recv(t, l, 2, time.Second)
	_, f2 := recv(t, c, 1, time.Second)
	if len(f1) != 2 || len(f2) != 1 || f1[0] != f1[1] || f1[0] == f2[0] || f1[0].Addr() != pubA {
		t.Fatalf("mappings lh %v, c %v", f1, f2)
	}
}

func TestAddNATRejectsOverlaps(t *testing.T) {
	n := NewNetwork(1)
	if err := n.AddNAT(lanA, pubA, EasyNAT); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		inside netip.Prefix
		public netip.Addr
	}{
		{netip.MustParsePrefix("10.1.0.128/25"), pubB},
		{lanB, pubA},
		{lanB, netip.MustParseAddr("10.2.0.1")},
	} {
		if err := n.AddNAT(c.inside, c.public, EasyNAT); err == nil {
			t.Errorf("AddNAT(%v, %v) succeeded", c.inside, c.public)
		}
	}
}
