package nodekeys

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
)

var testLighthouses = []api.Lighthouse{{VpnIP: netip.MustParseAddr("10.42.0.1"), Addrs: []string{"198.18.0.1:4242"}}}

// The daemon's renewal loop accepts what enroll wrote (pin, service key, file paths).
func TestRenewerAcceptsWhatEnrollWrote(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	cfg, p := enrolledNode(t, s, "web1", "10.42.0.5")
	if _, err := newRenewer(cfg, newPKIManager(newRecordingNode(), p), s.Clock, testLogger(t)); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollPrintsProgressWhileWaiting(t *testing.T) {
	s := nodekeystest.StartCAService(t, testLighthouses)
	s.Delay.Store(int64(300 * time.Millisecond))
	var out bytes.Buffer
	err := Enroll(context.Background(), EnrollOptions{Token: s.Invite(t, "slow", ""), Config: filepath.Join(t.TempDir(), "n.yml"),
		Timeout: 10 * time.Second, Progress: 50 * time.Millisecond}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "still waiting for the CA service") {
		t.Fatalf("no progress message:\n%s", out.String())
	}
}
