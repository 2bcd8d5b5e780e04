package handshake

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

// host is a test host holding the certificate versions asked for, all on one key and one
// first network, as Nebula 1.10+ requires.
func versionSide(t *testing.T, ca *certtest.CA, pool *cert.Pool, name, ip string, initiating cert.Version, versions ...cert.Version) *side {
	t.Helper()
	var certs []*cert.Certificate
	var key []byte
	var h *certtest.Host
	for _, v := range versions {
		opts := []certtest.Option{certtest.WithVersion(v)}
		if key != nil {
			opts = append(opts, certtest.WithKey(key))
		}
		h = ca.Issue(t, name, ip, opts...)
		key = h.Key
		certs = append(certs, h.Cert)
	}
	creds, err := NewCredentialSet(certs, key, initiating)
	if err != nil {
		t.Fatal(err)
	}
	return &side{host: h, cfg: &Config{Local: creds, Pool: pool, Now: fixedClock(certtest.Now()), Rand: rand.Reader}}
}

// legacyMsg1 is what Nebula 1.6 sends: a v1 certificate and no CertVersion.
func legacyMsg1(t *testing.T, s *side) []byte {
	t.Helper()
	in, _, err := Initiate(s.cfg, 0x1111)
	if err != nil {
		t.Fatal(err)
	}
	p, err := UnmarshalPayload(in.payload)
	if err != nil {
		t.Fatal(err)
	}
	p.CertVersion = 0
	in.payload = MarshalPayload(nil, p)
	_, msg1, err := in.writeMsg1()
	if err != nil {
		t.Fatal(err)
	}
	return msg1
}

func msgVersion(t *testing.T, plain []byte) uint32 {
	t.Helper()
	p, err := UnmarshalPayload(plain)
	if err != nil {
		t.Fatal(err)
	}
	return p.CertVersion
}

// The version matrix of Nebula 1.10+: the initiator sends its initiating version (or the one
// asked for), the responder answers in it when it holds it, else in its own default; either
// side accepts whatever version verifies.
func TestCertVersionSelection(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	pool := certtest.Pool(t, ca)
	v1, v2 := cert.Version1, cert.Version2
	tests := []struct {
		name               string
		ini, resp          *side
		iniVersion         cert.Version // Config.Version of the initiator
		wantIni, wantResp  cert.Version // the version each side sent
		wantMsg2CertVerSet bool
	}{
		{"v1 and v1", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v1), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v1), 0, v1, v1, true},
		{"v2 and v2", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v2), 0, v2, v2, true},
		{"v1 to v2-only: answered in v2", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v1), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v2), 0, v1, v2, true},
		{"v2 to v1-only: answered in v1", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v1), 0, v2, v1, true},
		{"v1 to dual initiating v2: answered in v1", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v1), versionSide(t, ca, pool, "b", "10.1.0.2/16", v2, v1, v2), 0, v1, v1, true},
		{"v2 to dual initiating v1: answered in v2", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", v1, v1, v2), 0, v2, v2, true},
		{"dual defaults to v1", versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, v1, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v1, v2), 0, v1, v1, true},
		{"dual initiating v2", versionSide(t, ca, pool, "a", "10.1.0.1/16", v2, v1, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v1, v2), 0, v2, v2, true},
		{"dual asked for v2 per handshake", versionSide(t, ca, pool, "a", "10.1.0.1/16", v1, v1, v2), versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, v1, v2), v2, v2, v2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ini.cfg.Version = tt.iniVersion
			in, msg1, err := Initiate(tt.ini.cfg, 0x1111)
			if err != nil {
				t.Fatal(err)
			}
			if in.Version() != tt.wantIni || msgVersion(t, msg1[80:]) != uint32(tt.wantIni) {
				t.Fatalf("msg 1 carries %v (CertVersion %d), want %v", in.Version(), msgVersion(t, msg1[80:]), tt.wantIni)
			}
			init, err := ReadInit(tt.resp.cfg, msg1)
			if err != nil {
				t.Fatal(err)
			}
			if init.PeerCert.Version() != tt.wantIni || init.ReplyVersion != tt.wantResp {
				t.Fatalf("responder saw %v and replies %v, want %v and %v", init.PeerCert.Version(), init.ReplyVersion, tt.wantIni, tt.wantResp)
			}
			rr, msg2, err := init.Respond(0x2222)
			if err != nil {
				t.Fatal(err)
			}
			ri, err := in.Complete(msg2)
			if err != nil {
				t.Fatal(err)
			}
			if ri.LocalVersion != tt.wantIni || ri.PeerCert.Version() != tt.wantResp ||
				rr.LocalVersion != tt.wantResp || rr.PeerCert.Version() != tt.wantIni {
				t.Fatalf("initiator sent %v got %v; responder sent %v got %v", ri.LocalVersion, ri.PeerCert.Version(), rr.LocalVersion, rr.PeerCert.Version())
			}
			if ri.PeerCert.VpnIP() != tt.resp.host.Cert.VpnIP() || rr.PeerCert.VpnIP() != tt.ini.host.Cert.VpnIP() {
				t.Fatal("peers not identified by their first network")
			}
			// Keys work whatever the versions.
			ct := ri.Send.Seal(nil, make([]byte, HeaderLen), []byte("hi"), 3)
			if pt, err := rr.Recv.Open(nil, make([]byte, HeaderLen), ct, 3); err != nil || string(pt) != "hi" {
				t.Fatalf("data does not open: %v", err)
			}
		})
	}
}

// A Nebula 1.6 initiator sends no CertVersion: a dual host answers in v1 with a msg 2 in
// 1.6's exact layout, and a v2-only host refuses before any DH with ErrVersion.
func TestLegacyInitiator(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	pool := certtest.Pool(t, ca)
	old := versionSide(t, ca, pool, "old", "10.1.0.1/16", 0, cert.Version1)
	msg1 := legacyMsg1(t, old)

	dual := versionSide(t, ca, pool, "dual", "10.1.0.2/16", cert.Version2, cert.Version1, cert.Version2)
	init, err := ReadInit(dual.cfg, msg1)
	if err != nil {
		t.Fatal(err)
	}
	if init.ReplyVersion != cert.Version1 {
		t.Fatalf("dual host replies %v to a 1.6 peer", init.ReplyVersion)
	}
	if _, _, err := init.Respond(0x2222); err != nil {
		t.Fatal(err)
	}
	if init.payload.CertVersion != 0 {
		t.Fatal("the echoed payload gained a CertVersion")
	}

	v2only := versionSide(t, ca, pool, "new", "10.1.0.3/16", 0, cert.Version2)
	if _, err := ReadInit(v2only.cfg, msg1); !errors.Is(err, ErrVersion) {
		t.Fatalf("v2-only host answered a 1.6 peer: %v, want ErrVersion", err)
	}
	// The same v1 certificate from a 1.10+ peer (CertVersion 1) is answered in v2: such a
	// peer reads v2.
	_, modern, err := Initiate(old.cfg, 0x3333)
	if err != nil {
		t.Fatal(err)
	}
	if init, err := ReadInit(v2only.cfg, modern); err != nil || init.ReplyVersion != cert.Version2 {
		t.Fatalf("v2-only host and a 1.10+ v1 peer: %v", err)
	}
}

// A CertVersion we do not know is a refused certificate, and a v2 certificate sent as v1
// (or the reverse) does not parse.
func TestCertVersionMismatchRefused(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	pool := certtest.Pool(t, ca)
	ini := versionSide(t, ca, pool, "a", "10.1.0.1/16", 0, cert.Version2)
	resp := versionSide(t, ca, pool, "b", "10.1.0.2/16", 0, cert.Version1, cert.Version2)
	for _, v := range []uint32{1, 3, 0xffffffff} {
		in, _, err := Initiate(ini.cfg, 0x1111)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := UnmarshalPayload(in.payload)
		p.CertVersion = v
		in.payload = MarshalPayload(nil, p)
		_, msg1, err := in.writeMsg1()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadInit(resp.cfg, msg1); !errors.Is(err, ErrInvalidCert) {
			t.Fatalf("v2 certificate labelled %d: %v, want ErrInvalidCert", v, err)
		}
	}
}

func TestNewCredentialSetRules(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	a1 := ca.Issue(t, "a", "10.1.0.1/16")
	a2 := ca.Issue(t, "a", "10.1.0.1/16", certtest.WithVersion(cert.Version2), certtest.WithKey(a1.Key))
	a2six := ca.Issue(t, "a", "10.1.0.1/16", certtest.WithVersion(cert.Version2), certtest.WithKey(a1.Key), certtest.WithIPs("fd00::1/64"))
	otherKey := ca.Issue(t, "a", "10.1.0.1/16", certtest.WithVersion(cert.Version2))
	otherNet := ca.Issue(t, "a", "10.1.0.9/16", certtest.WithVersion(cert.Version2), certtest.WithKey(a1.Key))
	a1b := ca.Issue(t, "a", "10.1.0.1/16", certtest.WithKey(a1.Key))

	good := []struct {
		name  string
		certs []*cert.Certificate
		init  cert.Version
		want  cert.Version
	}{
		{"v1 alone defaults to v1", []*cert.Certificate{a1.Cert}, 0, cert.Version1},
		{"v2 alone defaults to v2", []*cert.Certificate{a2.Cert}, 0, cert.Version2},
		{"both default to v1", []*cert.Certificate{a2.Cert, a1.Cert}, 0, cert.Version1},
		{"both, initiating 2", []*cert.Certificate{a1.Cert, a2.Cert}, cert.Version2, cert.Version2},
		{"v2 may add an IPv6 network", []*cert.Certificate{a1.Cert, a2six.Cert}, cert.Version2, cert.Version2},
	}
	for _, tt := range good {
		c, err := NewCredentialSet(tt.certs, a1.Key, tt.init)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if c.Initiating() != tt.want || c.Cert.Version() != tt.want || len(c.Certs()) != len(tt.certs) {
			t.Fatalf("%s: initiating %v, Cert %v", tt.name, c.Initiating(), c.Cert.Version())
		}
	}
	bad := []struct {
		name  string
		certs []*cert.Certificate
		init  cert.Version
	}{
		{"different keys", []*cert.Certificate{a1.Cert, otherKey.Cert}, 0},
		{"different first network", []*cert.Certificate{a1.Cert, otherNet.Cert}, 0},
		{"two v1", []*cert.Certificate{a1.Cert, a1b.Cert}, 0},
		{"initiating 1 without v1", []*cert.Certificate{a2.Cert}, cert.Version1},
		{"initiating 2 without v2", []*cert.Certificate{a1.Cert}, cert.Version2},
		{"initiating 3", []*cert.Certificate{a1.Cert, a2.Cert}, 3},
		{"none", nil, 0},
	}
	for _, tt := range bad {
		if _, err := NewCredentialSet(tt.certs, a1.Key, tt.init); !errors.Is(err, ErrCredentials) {
			t.Fatalf("%s: %v, want ErrCredentials", tt.name, err)
		}
	}
	// A handshake asking for a version not held is a config error.
	c, _ := NewCredentials(a1.Cert, a1.Key)
	if _, _, err := Initiate(&Config{Local: c, Pool: certtest.Pool(t, ca), Version: cert.Version2}, 1); !errors.Is(err, ErrConfig) {
		t.Fatalf("Initiate with a version not held: %v", err)
	}
	if !bytes.Equal(c.PrivateKey, a1.Key) {
		t.Fatal("key not kept")
	}
}
