package cert_test

import (
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

func benchHost(b *testing.B) (*certtest.CA, *certtest.Host, []byte) {
	ca := certtest.NewCA(b, "ca", certtest.WithGroups("web", "ssh"), certtest.WithIPs("10.42.0.0/16"))
	h := ca.NewHost(b, "host", "10.42.0.1/16", "web", "ssh")
	raw, err := h.Cert.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return ca, h, raw
}

func BenchmarkUnmarshal(b *testing.B) {
	_, _, raw := benchHost(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cert.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalHandshake(b *testing.B) {
	_, h, _ := benchHost(b)
	hs, _ := h.Cert.MarshalHandshake()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cert.UnmarshalHandshake(hs, h.PublicKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	ca, h, _ := benchHost(b)
	pool := certtest.Pool(b, ca)
	now := certtest.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pool.Verify(h.Cert, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFingerprint measures the cached path a handshake takes after the first call.
func BenchmarkFingerprint(b *testing.B) {
	_, _, raw := benchHost(b)
	c, _ := cert.Unmarshal(raw)
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Fingerprint()
	}
}

func BenchmarkFingerprintUncached(b *testing.B) {
	_, _, raw := benchHost(b)
	b.ReportAllocs()
	for b.Loop() {
		c, _ := cert.Unmarshal(raw)
		_ = c.Fingerprint()
	}
}
