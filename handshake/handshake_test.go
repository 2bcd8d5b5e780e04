package handshake

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

// fixedClock returns a clock frozen at t, so payload Times and validity are deterministic.
func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

type side struct {
	host *certtest.Host
	cfg  *Config
}

func newSide(t testing.TB, ca *certtest.CA, pool *cert.Pool, c Cipher, name, ip string) *side {
	t.Helper()
	h := ca.NewHost(t, name, ip)
	creds, err := NewCredentials(h.Cert, h.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &side{host: h, cfg: &Config{Cipher: c, Local: creds, Pool: pool, Now: fixedClock(certtest.Now()), Rand: rand.Reader}}
}

// pair is an initiator and a responder trusting the same CA.
func pair(t testing.TB, c Cipher) (ini, resp *side) {
	t.Helper()
	ca := certtest.NewCA(t, "test-ca")
	pool := certtest.Pool(t, ca)
	return newSide(t, ca, pool, c, "ini", "10.42.0.1/16"), newSide(t, ca, pool, c, "resp", "10.42.0.2/16")
}

// run performs a whole handshake and fails the test on any error.
func run(t testing.TB, ini, resp *side) (ri, rr *Result, msg1, msg2 []byte) {
	t.Helper()
	in, msg1, err := Initiate(ini.cfg, 0x1111)
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	init, err := ReadInit(resp.cfg, msg1)
	if err != nil {
		t.Fatalf("ReadInit: %v", err)
	}
	rr, msg2, err = init.Respond(0x2222)
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	ri, err = in.Complete(msg2)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return ri, rr, msg1, msg2
}

func TestHandshakeCompletesAndKeysInteroperate(t *testing.T) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		t.Run(c.String(), func(t *testing.T) {
			ini, resp := pair(t, c)
			iniClock := ini.cfg.Now()
			respClock := iniClock.Add(3 * time.Second)
			resp.cfg.Now = fixedClock(respClock)
			ri, rr, _, _ := run(t, ini, resp)

			if ri.PeerCert.Details.Name != "resp" || rr.PeerCert.Details.Name != "ini" {
				t.Fatalf("peer names: initiator saw %q, responder saw %q", ri.PeerCert.Details.Name, rr.PeerCert.Details.Name)
			}
			if !bytes.Equal(rr.PeerCert.Details.PublicKey, ini.host.PublicKey) || !bytes.Equal(ri.PeerCert.Details.PublicKey, resp.host.PublicKey) {
				t.Fatal("PeerCert.PublicKey is not the peer's static key")
			}
			if rr.PeerCert.Fingerprint() != ini.host.Cert.Fingerprint() {
				t.Fatal("recombined cert fingerprint differs from the .crt fingerprint")
			}
			if ri.CA == nil || rr.CA == nil || ri.CA.Details.Name != "test-ca" {
				t.Fatal("CA not reported")
			}
			if ri.LocalIndex != 0x1111 || ri.RemoteIndex != 0x2222 || rr.LocalIndex != 0x2222 || rr.RemoteIndex != 0x1111 {
				t.Fatalf("indexes: initiator %x/%x responder %x/%x", ri.LocalIndex, ri.RemoteIndex, rr.LocalIndex, rr.RemoteIndex)
			}
			if rr.PeerTime != uint64(iniClock.UnixNano()) || ri.PeerTime != uint64(respClock.UnixNano()) {
				t.Fatalf("PeerTime: responder saw %d, initiator saw %d", rr.PeerTime, ri.PeerTime)
			}
			// Both directions, first data counter 3 as Nebula uses.
			for n := uint64(3); n < 6; n++ {
				assertDelivers(t, ri.Send, rr.Recv, n)
				assertDelivers(t, rr.Send, ri.Recv, n)
			}
			// The two directions have different keys.
			hdr := testHeader(3)
			if _, err := ri.Recv.Open(nil, hdr, ri.Send.Seal(nil, hdr, []byte("x"), 3), 3); err == nil {
				t.Fatal("send and receive keys are the same")
			}
		})
	}
}

func assertDelivers(t *testing.T, send, recv *AEAD, counter uint64) {
	t.Helper()
	hdr := testHeader(counter)
	ct := send.Seal(nil, hdr, []byte("ping"), counter)
	pt, err := recv.Open(nil, hdr, ct, counter)
	if err != nil || string(pt) != "ping" {
		t.Fatalf("counter %d: Open = %q, %v", counter, pt, err)
	}
}

func TestMessagesHaveNebulaLayout(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	_, _, msg1, msg2 := run(t, ini, resp)

	wantHdr1 := []byte{0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	if !bytes.Equal(msg1[:16], wantHdr1) {
		t.Fatalf("msg 1 header % x, want % x", msg1[:16], wantHdr1)
	}
	if !bytes.Equal(msg1[48:80], ini.host.PublicKey) {
		t.Fatal("msg 1 [48:80] is not the initiator static key in clear")
	}
	p, err := UnmarshalPayload(msg1[80:])
	if err != nil {
		t.Fatalf("msg 1 payload is not in clear: %v", err)
	}
	hsCert, _ := ini.host.Cert.MarshalHandshake()
	if !bytes.Equal(p.Cert, hsCert) || p.InitiatorIndex != 0x1111 || p.ResponderIndex != 0 ||
		p.Time != uint64(ini.cfg.Now().UnixNano()) {
		t.Fatalf("msg 1 payload %+v", p)
	}
	if bytes.Contains(p.Cert, ini.host.PublicKey) {
		t.Fatal("msg 1 cert still carries the public key (field 7)")
	}
	wantHdr2 := []byte{0x10, 0, 0, 0, 0, 0, 0x11, 0x11, 0, 0, 0, 0, 0, 0, 0, 2}
	if !bytes.Equal(msg2[:16], wantHdr2) {
		t.Fatalf("msg 2 header % x, want % x", msg2[:16], wantHdr2)
	}
	respCert, _ := resp.host.Cert.MarshalHandshake()
	// msg 2 = header + e + enc(s)+tag + enc(payload)+tag; the payload holds the stripped
	// cert, indexes and time.
	wantLen := 16 + 32 + 48 + len(MarshalPayload(nil, &Payload{Cert: respCert, InitiatorIndex: 0x1111,
		ResponderIndex: 0x2222, Time: uint64(resp.cfg.Now().UnixNano()), CertVersion: 1})) + 16
	if len(msg2) != wantLen {
		t.Fatalf("msg 2 is %d bytes, want %d", len(msg2), wantLen)
	}
	if bytes.Contains(msg2, resp.host.PublicKey) {
		t.Fatal("responder static key visible in msg 2")
	}
}

func TestInjectedRandomnessMakesMsg1Deterministic(t *testing.T) {
	ini, _ := pair(t, ChaChaPoly)
	seed := bytes.Repeat([]byte{42}, 32)
	ini.cfg.Rand = bytes.NewReader(seed)
	_, a, err := Initiate(ini.cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	ini.cfg.Rand = bytes.NewReader(seed)
	_, b, err := Initiate(ini.cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("same Rand and clock gave different msg 1")
	}
	wantE, _ := curve25519.X25519(seed, curve25519.Basepoint)
	if !bytes.Equal(a[16:48], wantE) {
		t.Fatal("ephemeral key is not derived from Rand")
	}
}

func TestCompleteIgnoresUnreadableMsg2ThenAcceptsTheRealOne(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	in, msg1, err := Initiate(ini.cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	init, err := ReadInit(resp.cfg, msg1)
	if err != nil {
		t.Fatal(err)
	}
	_, msg2, err := init.Respond(8)
	if err != nil {
		t.Fatal(err)
	}
	lowOrderE := append([]byte(nil), msg2...)
	copy(lowOrderE[16:48], make([]byte, 32))
	// A valid msg 2 of another session between the same hosts: other ephemerals.
	_, _, _, foreign := run(t, ini, resp)
	binary.BigEndian.PutUint32(foreign[4:8], 7)

	bad := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"ephemeral byte flipped", flip(msg2, 20), ErrNoiseRead},
		{"encrypted static flipped", flip(msg2, 60), ErrNoiseRead},
		{"payload flipped", flip(msg2, 120), ErrNoiseRead},
		{"tag flipped", flip(msg2, len(msg2)-1), ErrNoiseRead},
		{"low-order ephemeral", lowOrderE, ErrLowOrderKey},
		{"msg 2 of another session", foreign, ErrNoiseRead},
		{"header counter 1", withCounter(msg2, 1), ErrMalformed},
		{"wrong remote index", withIndex(msg2, 9), ErrMalformed},
		{"header only", msg2[:16], ErrNoiseRead},
		{"empty", nil, ErrMalformed},
	}
	for _, b := range bad {
		_, err := in.Complete(b.pkt)
		if !errors.Is(err, b.want) || !Retryable(err) {
			t.Errorf("%s: Complete error = %v, want %v (retryable)", b.name, err, b.want)
		}
	}
	r, err := in.Complete(msg2)
	if err != nil {
		t.Fatalf("real msg 2 after bad ones: %v", err)
	}
	if r.RemoteIndex != 8 {
		t.Fatalf("RemoteIndex = %d", r.RemoteIndex)
	}
	if _, err := in.Complete(msg2); !errors.Is(err, ErrDone) {
		t.Fatalf("second Complete: %v, want ErrDone", err)
	}
}

func withCounter(p []byte, n uint64) []byte {
	c := append([]byte(nil), p...)
	binary.BigEndian.PutUint64(c[8:16], n)
	return c
}

func withIndex(p []byte, idx uint32) []byte {
	c := append([]byte(nil), p...)
	binary.BigEndian.PutUint32(c[4:8], idx)
	return c
}

// badCreds builds credentials NewCredentials would refuse, to play a misbehaving peer: it
// sends c and uses key (and its public half) as the Noise static key.
func badCreds(t *testing.T, c *cert.Certificate, key []byte) *Credentials {
	t.Helper()
	hs, err := c.MarshalHandshake()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := curve25519.X25519(key, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	cr := &Credentials{Cert: c, PrivateKey: key, publicKey: pub, vpnIP: c.VpnIP(), initiating: c.Version()}
	cr.byVersion[c.Version()] = &versionCert{cert: c, hsCert: hs}
	return cr
}

// peerCases are certificates a peer may present that verification must refuse.
func peerCases(t *testing.T) (ca *certtest.CA, pool *cert.Pool, cases []struct {
	name  string
	creds *Credentials
	want  []error
}) {
	ca = certtest.NewCA(t, "good-ca", certtest.WithGroups("web", "ssh"))
	pool = certtest.Pool(t, ca)
	foreign := certtest.NewCA(t, "foreign-ca")
	now := certtest.Now()
	mk := func(h *certtest.Host) *Credentials { return badCreds(t, h.Cert, h.Key) }

	blocked := ca.NewHost(t, "blocked", "10.42.0.9/16")
	pool.Block(blocked.Cert.Fingerprint())
	victim := ca.NewHost(t, "victim", "10.42.0.10/16")
	thief := ca.NewHost(t, "thief", "10.42.0.11/16")

	cases = []struct {
		name  string
		creds *Credentials
		want  []error
	}{
		{"untrusted CA", mk(foreign.NewHost(t, "x", "10.42.0.3/16")), []error{ErrInvalidCert, cert.ErrUnknownCA}},
		{"expired", mk(ca.Issue(t, "old", "10.42.0.4/16", certtest.WithValidity(now.Add(-2*time.Hour), now.Add(-time.Minute)))), []error{ErrInvalidCert, cert.ErrExpired}},
		{"not yet valid", mk(ca.Issue(t, "future", "10.42.0.5/16", certtest.WithValidity(now.Add(time.Minute), now.Add(time.Hour)))), []error{ErrInvalidCert, cert.ErrExpired}},
		{"blocklisted", mk(blocked), []error{ErrInvalidCert, cert.ErrBlocked}},
		{"group outside CA constraints", mk(ca.NewHost(t, "g", "10.42.0.6/16", "db")), []error{ErrInvalidCert, cert.ErrConstraint}},
		{"cert of another host's key", badCreds(t, victim.Cert, thief.Key), []error{ErrInvalidCert, cert.ErrSignatureMismatch}},
		{"no IPs", mk(ca.NewHost(t, "noip", "")), []error{ErrNoVPNIP, ErrInvalidCert}},
		{"our own VPN IP", mk(ca.NewHost(t, "twin", "10.42.0.1/16")), []error{ErrSelf}},
	}
	return ca, pool, cases
}

func TestReadInitRefusesInvalidPeerCert(t *testing.T) {
	ca, pool, cases := peerCases(t)
	me := newSide(t, ca, pool, AESGCM, "me", "10.42.0.1/16")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peerCfg := *me.cfg
			peerCfg.Local = tc.creds
			_, msg1, err := Initiate(&peerCfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ReadInit(me.cfg, msg1)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("ReadInit error = %v, want %v", err, want)
				}
			}
			if Retryable(err) {
				t.Errorf("error %v is retryable", err)
			}
		})
	}
}

func TestCompleteRefusesInvalidResponderCert(t *testing.T) {
	ca, pool, cases := peerCases(t)
	me := newSide(t, ca, pool, AESGCM, "me", "10.42.0.1/16")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, msg1, err := Initiate(me.cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			// The misbehaving responder trusts us, so it answers.
			respCfg := *me.cfg
			creds := *tc.creds
			creds.vpnIP = netip.Addr{} // so the twin does not refuse us first
			respCfg.Local = &creds
			init, err := ReadInit(&respCfg, msg1)
			if err != nil {
				t.Fatalf("responder ReadInit: %v", err)
			}
			_, msg2, err := init.Respond(2)
			if err != nil {
				t.Fatal(err)
			}
			_, err = in.Complete(msg2)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Complete error = %v, want %v", err, want)
				}
			}
			if Retryable(err) {
				t.Errorf("error %v is retryable", err)
			}
		})
	}
}

func TestExpiryIsJudgedByInjectedClock(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	resp.cfg.Now = fixedClock(ini.host.Cert.Details.NotAfter.Add(time.Second))
	if _, err := ReadInit(resp.cfg, msg1); !errors.Is(err, cert.ErrExpired) {
		t.Fatalf("ReadInit after NotAfter: %v, want cert.ErrExpired", err)
	}
	resp.cfg.Now = fixedClock(ini.host.Cert.Details.NotAfter)
	if _, err := ReadInit(resp.cfg, msg1); err != nil {
		t.Fatalf("ReadInit at exactly NotAfter: %v", err)
	}
}

func TestLowOrderKeysInMsg1AreRefusedBeforeDH(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range lowOrderSamples() {
		for _, off := range []int{16, 48} { // e, then s
			bad := append([]byte(nil), msg1...)
			copy(bad[off:off+32], pt[:])
			_, err := ReadInit(resp.cfg, bad)
			if !errors.Is(err, ErrLowOrderKey) {
				t.Errorf("key % x at offset %d: ReadInit error = %v, want ErrLowOrderKey", pt[:4], off, err)
			}
		}
	}
}

// lowOrderSamples lists every small-order encoding, also with the ignored top bit set.
func lowOrderSamples() [][32]byte {
	var out [][32]byte
	// Derive the list from curve25519 rather than copying isLowOrder's table: a point is
	// low-order iff X25519 with any scalar yields zero. Probe the candidates the table
	// claims, and check each really is refused by X25519.
	for _, hi := range []byte{0, 0x80} {
		for _, p := range candidatePoints() {
			p[31] |= hi
			if _, err := curve25519.X25519(bytes.Repeat([]byte{9}, 32), p[:]); err == nil {
				continue
			}
			out = append(out, p)
		}
	}
	return out
}

func candidatePoints() [][32]byte {
	var out [][32]byte
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		var p [32]byte
		for i := range p {
			p[i] = unhex(h[2*i])<<4 | unhex(h[2*i+1])
		}
		out = append(out, p)
	}
	return out
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

func TestIsLowOrderAgreesWithX25519(t *testing.T) {
	samples := lowOrderSamples()
	if len(samples) != 14 {
		t.Fatalf("%d of 14 candidate encodings are refused by X25519", len(samples))
	}
	for _, p := range samples {
		if !isLowOrder(p[:]) {
			t.Errorf("isLowOrder(% x) = false, but X25519 refuses it", p)
		}
	}
	for range 200 {
		priv := make([]byte, 32)
		rand.Read(priv)
		pub, _ := curve25519.X25519(priv, curve25519.Basepoint)
		if isLowOrder(pub) {
			t.Fatalf("isLowOrder(% x) = true for a regular public key", pub)
		}
	}
	if !isLowOrder(make([]byte, 31)) {
		t.Error("a 31-byte key is not refused")
	}
}

func TestTruncatedPacketsAreRefused(t *testing.T) {
	ini, resp := pair(t, ChaChaPoly)
	in, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(msg1) {
		if _, err := ReadInit(resp.cfg, msg1[:n]); err == nil {
			t.Fatalf("ReadInit accepted msg 1 truncated to %d bytes", n)
		}
	}
	init, err := ReadInit(resp.cfg, msg1)
	if err != nil {
		t.Fatal(err)
	}
	_, msg2, err := init.Respond(2)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(msg2) {
		if _, err := in.Complete(msg2[:n]); !Retryable(err) {
			t.Fatalf("Complete(msg 2 truncated to %d) = %v, want a retryable error", n, err)
		}
	}
	if _, err := in.Complete(msg2); err != nil {
		t.Fatalf("full msg 2 after truncated ones: %v", err)
	}
}

// NEBULA-WIRE §7: msg 1 carries no MAC, so a ChaCha responder answers an AES initiator,
// but the initiator cannot read msg 2 and keeps retrying.
func TestCipherMismatchIsOneSided(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	resp.cfg.Cipher = ChaChaPoly
	in, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	init, err := ReadInit(resp.cfg, msg1)
	if err != nil {
		t.Fatalf("responder refused a mismatched msg 1: %v", err)
	}
	if _, _, err := init.Respond(2); err != nil {
		t.Fatalf("responder could not answer: %v", err)
	}
	_, msg2, _ := mustRespond(t, resp.cfg, msg1)
	_, err = in.Complete(msg2)
	if !errors.Is(err, ErrNoiseRead) || !Retryable(err) {
		t.Fatalf("initiator Complete = %v, want retryable ErrNoiseRead", err)
	}
}

func mustRespond(t *testing.T, cfg *Config, msg1 []byte) (*Result, []byte, error) {
	t.Helper()
	init, err := ReadInit(cfg, msg1)
	if err != nil {
		t.Fatal(err)
	}
	return init.Respond(3)
}

func TestHeaderRules(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(p []byte)) []byte { c := append([]byte(nil), msg1...); f(c); return c }
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"as sent", msg1, true},
		{"version nibble 2 ignored", mod(func(p []byte) { p[0] = 0x20 }), true},
		{"reserved bytes ignored", mod(func(p []byte) { p[2], p[3] = 0xab, 0xcd }), true},
		{"remote index ignored", mod(func(p []byte) { p[7] = 9 }), true},
		{"type data", mod(func(p []byte) { p[0] = 0x11 }), false},
		{"subtype xx_psk0", mod(func(p []byte) { p[1] = 1 }), false},
		{"counter 2", withCounter(msg1, 2), false},
		{"counter 0", withCounter(msg1, 0), false},
		{"initiator index 0", rewritePayload(t, msg1, func(p *Payload) { p.InitiatorIndex = 0 }), false},
		{"no cert", rewritePayload(t, msg1, func(p *Payload) { p.Cert = nil }), false},
		{"garbage cert", rewritePayload(t, msg1, func(p *Payload) { p.Cert = []byte{1, 2, 3} }), false},
		{"payload not protobuf", append(append([]byte(nil), msg1[:80]...), 0xff), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadInit(resp.cfg, tt.pkt)
			if (err == nil) != tt.ok {
				t.Fatalf("ReadInit error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func rewritePayload(t *testing.T, msg1 []byte, f func(p *Payload)) []byte {
	t.Helper()
	p, err := UnmarshalPayload(msg1[80:])
	if err != nil {
		t.Fatal(err)
	}
	f(p)
	return MarshalPayload(append([]byte(nil), msg1[:80]...), p)
}

func TestPeerCertPublicKeyInPayloadIsOverwritten(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	full, err := ini.host.Cert.Marshal() // field 7 left in, as a careless sender would
	if err != nil {
		t.Fatal(err)
	}
	init, err := ReadInit(resp.cfg, rewritePayload(t, msg1, func(p *Payload) { p.Cert = full }))
	if err != nil {
		t.Fatalf("cert with public key: %v", err)
	}
	if !bytes.Equal(init.PeerCert.Details.PublicKey, ini.host.PublicKey) {
		t.Fatal("PublicKey not taken from the Noise static key")
	}
}

func TestCredentialsSwapDoesNotAffectPendingHandshake(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	in, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	renewed := newSide(t, certtest.NewCA(t, "other"), resp.cfg.Pool, AESGCM, "ini2", "10.42.0.1/16")
	ini.cfg.Local = renewed.cfg.Local
	_, msg2, _ := mustRespond(t, resp.cfg, msg1)
	if _, err := in.Complete(msg2); err != nil {
		t.Fatalf("Complete after credentials swap: %v", err)
	}
}

func TestMisuseIsReported(t *testing.T) {
	ini, resp := pair(t, AESGCM)
	if _, _, err := Initiate(ini.cfg, 0); !errors.Is(err, ErrIndex) {
		t.Errorf("Initiate index 0: %v", err)
	}
	if _, _, err := Initiate(nil, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("Initiate nil config: %v", err)
	}
	if _, _, err := Initiate(&Config{Pool: ini.cfg.Pool}, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("Initiate without credentials: %v", err)
	}
	if _, _, err := Initiate(&Config{Local: ini.cfg.Local}, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("Initiate without pool: %v", err)
	}
	if _, _, err := Initiate(&Config{Local: &Credentials{Cert: ini.host.Cert, PrivateKey: ini.host.Key}, Pool: ini.cfg.Pool}, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("Initiate with hand-made credentials: %v", err)
	}
	bad := *ini.cfg
	bad.Cipher = 7
	if _, _, err := Initiate(&bad, 1); !errors.Is(err, ErrUnknownCipher) {
		t.Errorf("Initiate with cipher 7: %v", err)
	}
	_, msg1, _ := Initiate(ini.cfg, 1)
	init, err := ReadInit(resp.cfg, msg1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := init.Respond(0); !errors.Is(err, ErrIndex) {
		t.Errorf("Respond index 0: %v", err)
	}
	if _, _, err := init.Respond(5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := init.Respond(5); !errors.Is(err, ErrDone) {
		t.Errorf("second Respond: %v", err)
	}
}

func TestNewCredentialsChecksIdentity(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	a, b := ca.NewHost(t, "a", "10.1.0.1/16"), ca.NewHost(t, "b", "10.1.0.2/16")
	noIP := ca.NewHost(t, "n", "")
	tests := []struct {
		name string
		c    *cert.Certificate
		key  []byte
		ok   bool
	}{
		{"matching key", a.Cert, a.Key, true},
		{"other host's key", a.Cert, b.Key, false},
		{"short key", a.Cert, a.Key[:31], false},
		{"CA certificate", ca.Cert, ca.Key, false},
		{"no IPs", noIP.Cert, noIP.Key, false},
		{"nil cert", nil, a.Key, false},
	}
	for _, tt := range tests {
		_, err := NewCredentials(tt.c, tt.key)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrCredentials)) {
			t.Errorf("%s: NewCredentials error = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// FuzzReadInit starts from real nebula 1.6.1 msg 1 packets (testdata/nebula-1.6.1), which
// verify under the recorded CA, so mutations reach the payload and certificate checks.
func FuzzReadInit(f *testing.F) {
	g := loadGolden(f)
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		msg1 := g.file(f, c.String()+"-responder-msg1")
		f.Add(msg1)
		f.Add(msg1[:80])
	}
	f.Add(make([]byte, 16))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		init, err := ReadInit(g.config(AESGCM), pkt)
		if err != nil {
			return
		}
		if init.PeerCert == nil || init.CA == nil || init.InitiatorIndex == 0 || !init.PeerCert.VpnIP().IsValid() {
			t.Fatalf("accepted msg 1 without identity: %+v", init)
		}
		if _, _, err := init.Respond(9); err != nil && !errors.Is(err, ErrNoiseRead) {
			t.Fatalf("Respond: %v", err)
		}
	})
}

// FuzzComplete replays our recorded msg 1 (same seed and clock) and feeds mutations of
// nebula's real msg 2 to Complete.
func FuzzComplete(f *testing.F) {
	g := loadGolden(f)
	msg2 := g.file(f, "aes-initiator-msg2")
	f.Add(msg2)
	f.Add(msg2[:48])
	f.Add(msg2[:16])
	f.Add(g.file(f, "chachapoly-initiator-msg2"))
	// The recorded msg 2 answers the recorded msg 1, which had no CertVersion (ours now
	// has): complete as that initiator so mutations reach the payload and certificate.
	recorded := g.file(f, "aes-initiator-msg1")[80:]
	f.Fuzz(func(t *testing.T, pkt []byte) {
		in, _, err := Initiate(g.config(AESGCM), 0x0a0b0c01)
		if err != nil {
			t.Fatal(err)
		}
		in.payload, in.hs = recorded, nil
		r, err := in.Complete(pkt)
		if err != nil {
			return
		}
		if r.PeerCert == nil || r.RemoteIndex == 0 || r.Send == nil || r.Recv == nil {
			t.Fatalf("incomplete result: %+v", r)
		}
	})
}

func BenchmarkHandshake(b *testing.B) {
	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		b.Run(c.String(), func(b *testing.B) {
			ini, resp := pair(b, c)
			b.ReportAllocs()
			for b.Loop() {
				in, msg1, err := Initiate(ini.cfg, 1)
				if err != nil {
					b.Fatal(err)
				}
				init, err := ReadInit(resp.cfg, msg1)
				if err != nil {
					b.Fatal(err)
				}
				_, msg2, err := init.Respond(2)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := in.Complete(msg2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadInit is the responder's cost before any DH: what an invalid-cert flood costs.
func BenchmarkReadInit(b *testing.B) {
	ini, resp := pair(b, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadInit(resp.cfg, msg1); err != nil {
			b.Fatal(err)
		}
	}
}

// flynn/noise does not roll its state back when a DH fails inside ReadMessage. A msg 2 whose
// encrypted static key is low-order makes exactly that happen; the real msg 2 must still
// complete afterwards.
func TestCompleteSurvivesLowOrderResponderStatic(t *testing.T) {
	for _, pt := range lowOrderSamples() {
		ini, resp := pair(t, AESGCM)
		in, msg1, err := Initiate(ini.cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		evil := *resp.cfg
		creds := *resp.cfg.Local
		creds.publicKey = pt[:]
		evil.Local = &creds
		_, bad, err := mustRespond(t, &evil, msg1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Complete(bad); !errors.Is(err, ErrNoiseRead) {
			t.Fatalf("static % x: Complete = %v, want ErrNoiseRead", pt[:4], err)
		}
		_, good, err := mustRespond(t, resp.cfg, msg1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Complete(good); err != nil {
			t.Fatalf("real msg 2 after a low-order one: %v", err)
		}
	}
}
