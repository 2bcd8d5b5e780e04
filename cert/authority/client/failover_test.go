package client_test

import (
	"net"
	"testing"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
)

// deadURL is a loopback address nothing listens on (connection refused at once).
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "https://" + ln.Addr().String()
}

// TestClientFailsOverToTheNextReplicaAndStaysThere: the first URL of the list is down; the
// request goes to the second, and so do the next ones, without trying the dead one first.
func TestClientFailsOverToTheNextReplicaAndStaysThere(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	tok, err := authority.ParseToken(s.invite(t, "web1"))
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(deadURL(t)+", "+s.url+"/", s.pin, client.Options{Now: s.Now})
	if _, err := c.Enroll(ctx, tok.Secret); err != nil {
		t.Fatalf("enroll with the first replica down: %v", err)
	}
	before := len(s.recorded())
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.recorded()) == before {
		t.Error("health did not reach the live replica")
	}
	// All down: the last error says which replica and why.
	c = client.New(deadURL(t)+","+deadURL(t), s.pin, client.Options{})
	if _, err := c.Health(ctx); err == nil {
		t.Fatal("no replica up, yet an answer")
	}
}

// TestEnrollWithATokenNamingSeveralReplicas: client.Enroll with a token whose first
// replica is down enrolls at the second.
func TestEnrollWithATokenNamingSeveralReplicas(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	tok, err := authority.ParseToken(s.invite(t, "web1"))
	if err != nil {
		t.Fatal(err)
	}
	tok.URL = deadURL(t) + "," + s.url
	e, err := client.Enroll(ctx, tok.String(), client.Options{Now: s.Now})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if e.URL != tok.URL {
		t.Errorf("enrollment keeps URL %q, want the whole list %q for renewals", e.URL, tok.URL)
	}
}
