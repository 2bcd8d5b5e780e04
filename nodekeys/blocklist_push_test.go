package nodekeys

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
)

// startPush runs the renewer's push loop (without the interval loop) until the test ends.
func startPush(t *testing.T, r *renewer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.runBlocklistPush(ctx) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the push loop did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestBlocklistPushAppliesARevocationAtOnceWithoutTheInterval(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	r, node := newTestRenewer(t, s, cfg, p)
	startPush(t, r)
	// The loop holds a request; the fake clock never moves, so no interval fetch helps.
	deadline := time.Now().Add(5 * time.Second)
	for s.Reqs.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	revoked := time.Now()
	if _, err := s.A.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-node.set:
		if !got.Pool.IsBlocked(pb.Creds.Cert.Fingerprint()) {
			t.Fatal("b not blocked")
		}
		t.Logf("revocation applied %v after the revoke", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("revocation not pushed within 5 s")
	}
	if v, _ := r.m.blocklistVersion(); v != 1 {
		t.Errorf("version in force %d, want 1", v)
	}
	// The next wait asks for lists after version 1 and is held again (nothing applied).
	if _, err := s.A.Revoke("b"); err != nil { // blocks nothing new: no version change
		t.Fatal(err)
	}
	select {
	case <-node.set:
		t.Error("a revocation that changed nothing was applied")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestBlocklistPushBacksOffWhileTheServiceIsDownAndResumes(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	r, node := newTestRenewer(t, s, cfg, p)
	s.Down.Store(true)
	startPush(t, r)
	// Minutes, not hours, of fake time: the service lists only certificates that are
	// still valid, and b's must be when it is revoked below.
	for range 3 {
		s.Clock.WaitFor(t, 1)
		s.Clock.Advance(time.Minute)
	}
	s.Clock.WaitFor(t, 1)
	if got, want := s.Clock.AskedDurations(), []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("backoff %v, want %v", got, want)
	}
	s.Down.Store(false)
	if _, err := s.A.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	s.Clock.Advance(time.Minute)
	select {
	case got := <-node.set:
		if !got.Pool.IsBlocked(pb.Creds.Cert.Fingerprint()) {
			t.Fatal("b not blocked")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("revocation not applied once the service was back")
	}
}

func TestBlocklistPushStopsPromptlyWhileHeld(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	stop := startPush(t, r)
	time.Sleep(300 * time.Millisecond) // held by now
	start := time.Now()
	stop()
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v to stop", d)
	}
}
