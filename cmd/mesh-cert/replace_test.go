package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority/client"
)

// TestInviteReplaceBringsAHostBackUnderItsName: web1's certificate expired while it was
// off. Inviting the name again is refused with the way out in the message; `invite -name
// web1 -replace` gives a token for the same name and IP, web1 enrolls with it, and the
// audit log keeps the whole history. A revoked host comes back the same way, and what it
// still held that was valid is revoked.
func TestInviteReplaceBringsAHostBackUnderItsName(t *testing.T) {
	_, config := caService(t, fixedNow, "127.0.0.1:0")
	var mu sync.Mutex
	now := fixedNow
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	logs := &lockedBuffer{}
	e := &env{stdout: logs, stderr: logs, now: clock}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, e, config, func(a string) { addr <- a }) }()
	select {
	case <-addr:
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	defer func() { cancel(); <-done }()

	enroll := func(tok string) *client.Enrollment {
		t.Helper()
		en, err := client.Enroll(context.Background(), tok, client.Options{Now: clock})
		if err != nil {
			t.Fatalf("enroll: %v\n%s", err, logs.String())
		}
		return en
	}
	r := mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1", "-groups", "web"))
	first := enroll(inviteToken(t, r.stdout))
	advance(2 * time.Hour) // the cert (1 h) expired while web1 was off

	r = meshCert(t, fixedNow, "invite", "-config", config, "-cidr", "servers", "-name", "web1")
	if r.code != 1 || !strings.Contains(r.stderr, "-replace") {
		t.Errorf("invite of an enrolled name should fail and name -replace: %+v", r)
	}
	r = mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-name", "web1", "-replace"))
	if !strings.Contains(r.stdout, "ip:     10.42.0.2/16") || !strings.Contains(r.stdout, "groups: web") {
		t.Errorf("replace did not keep the identity: %q", r.stdout)
	}
	second := enroll(inviteToken(t, r.stdout))
	if second.Cert.Details.Ips[0] != first.Cert.Details.Ips[0] || second.Cert.Details.Name != "web1" {
		t.Errorf("re-enrolled as %+v", second.Cert.Details)
	}

	// Revoked: -replace brings it back too, and revokes the cert it still held.
	mustOK(t, meshCert(t, fixedNow, "revoke", "-config", config, "web1"))
	r = mustOK(t, meshCert(t, fixedNow, "invite", "-config", config, "-name", "web1", "-replace"))
	third := enroll(inviteToken(t, r.stdout))
	r = mustOK(t, meshCert(t, fixedNow, "list", "-config", config, "-audit"))
	var actions []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		actions = append(actions, strings.Split(l, "\t")[2])
	}
	want := "invite enroll replace enroll revoke replace enroll"
	if got := strings.Join(actions, " "); got != want {
		t.Errorf("audit actions %q, want %q", got, want)
	}
	if third.Cert.Details.Ips[0] != first.Cert.Details.Ips[0] {
		t.Errorf("IP changed: %v", third.Cert.Details.Ips[0])
	}
}
