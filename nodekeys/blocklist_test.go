package nodekeys

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// TestRelayedBlocklistIsSavedAndKeptAcrossPKISwaps drives a real overlay.Node (not run:
// ApplyBlocklist needs no packets) through the pkiManager: a list a lighthouse relayed to
// the node is saved to <state_file>.blocklist like a fetched one, stays applied to a PKI a
// reload swaps in, and is what the next start loads; an older fetched list changes nothing.
func TestRelayedBlocklistIsSavedAndKeptAcrossPKISwaps(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	_, pc := enrolledNode(t, s, "c", "")
	fpB, fpC := pb.Creds.Cert.Fingerprint(), pc.Creds.Cert.Fingerprint()
	cfg.Tun.Disabled = true
	conn, err := udptest.NewNetwork(1).Listen(netip.MustParseAddrPort("198.18.0.1:4242"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := overlay.New(cfg, p, overlay.Options{Conn: conn})
	if err != nil {
		t.Fatal(err)
	}
	m := newPKIManager(node, p)
	r, err := newRenewer(cfg, m, s.Clock, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The CA fetch: version 1 blocks b, and is saved.
	if _, err := s.A.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	r.fetchBlocklist(ctx)
	if node.BlocklistVersion() == 0 || !m.current().Pool.IsBlocked(fpB) {
		t.Fatal("fetched blocklist not applied through the node")
	}
	v1 := node.BlocklistVersion()
	old := node.Blocklist()

	// The service goes down; c is revoked meanwhile and the list reaches the node from a
	// lighthouse (what overlay's relay does once it has the list).
	if _, err := s.A.Revoke("c"); err != nil {
		t.Fatal(err)
	}
	relayed, err := r.client.FetchBlocklist(ctx, p.Pool)
	if err != nil {
		t.Fatal(err)
	}
	s.Down.Store(true)
	if ok, err := node.ApplyBlocklist(relayed, overlay.BlocklistFromRelay); !ok || err != nil {
		t.Fatalf("relayed list: %v %v", ok, err)
	}
	saved := readSavedBlocklist(t, r.blocklistFile())
	if saved.Version != relayed.Version || saved.Version <= v1 {
		t.Fatalf("saved version %d, want the relayed %d", saved.Version, relayed.Version)
	}
	if v, _ := m.blocklistVersion(); v != relayed.Version {
		t.Fatalf("manager keeps version %d, want %d", v, relayed.Version)
	}
	// An older list (a stale fetch) is refused and does not overwrite the file.
	if ok, _ := m.applyBlocklist(old, overlay.BlocklistFromCA); ok {
		t.Fatal("older list applied")
	}
	if readSavedBlocklist(t, r.blocklistFile()).Version != relayed.Version {
		t.Fatal("older list overwrote the saved one")
	}
	// A reload swaps in a fresh pool: both revocations stay in force.
	fresh, err := overlay.LoadPKI(cfg, s.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetPKI(fresh); err != nil {
		t.Fatal(err)
	}
	if !fresh.Pool.IsBlocked(fpB) || !fresh.Pool.IsBlocked(fpC) {
		t.Fatal("a reloaded PKI lost the relayed blocklist")
	}
	// The next start (service still down) loads the relayed list from the file.
	fresh2, _ := overlay.LoadPKI(cfg, s.Clock.Now())
	r2, node2 := newTestRenewer(t, s, cfg, fresh2)
	r2.loadSavedBlocklist()
	if got := <-node2.set; !got.Pool.IsBlocked(fpC) {
		t.Fatal("the saved relayed list was not applied at start")
	}
}

func readSavedBlocklist(t *testing.T, path string) *cert.SignedBlocklist {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var bl cert.SignedBlocklist
	if err := json.Unmarshal(b, &bl); err != nil {
		t.Fatal(err)
	}
	return &bl
}
