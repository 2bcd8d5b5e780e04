package authority_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

func FuzzParseToken(f *testing.F) {
	f.Add(authority.Token{URL: "https://ca.example:8443", Pin: make([]byte, 32), Secret: make([]byte, 32)}.String())
	f.Add("mesh1...")
	f.Add("mesh1.aHR0cDovL3g.AA.AA")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := authority.ParseToken(s)
		if err != nil {
			return
		}
		again, err := authority.ParseToken(tok.String())
		if err != nil || again.URL != tok.URL || !bytes.Equal(again.Pin, tok.Pin) || !bytes.Equal(again.Secret, tok.Secret) {
			t.Fatalf("accepted token does not round-trip: %v", err)
		}
	})
}

// FuzzServerRequests sends arbitrary bodies to every endpoint: nothing panics, nothing is
// issued (no body can carry a valid secret or proof), and the store is unchanged.
func FuzzServerRequests(f *testing.F) {
	ca := certtest.NewCA(f, "ca", certtest.WithIPs("10.42.0.0/16"))
	host := ca.NewHost(f, "h", "10.42.0.5/16")
	_, svc, _ := cert.GenerateX25519()
	store := authority.NewMemStore()
	a, err := authority.New(authority.Options{Store: store, CAs: []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}, ServiceKey: svc})
	if err != nil {
		f.Fatal(err)
	}
	h := authority.NewServer(authority.ServerOptions{Authority: a, EnrollRate: -1}).Handler()
	renew, _ := json.Marshal(authority.RenewRequest{Cert: host.PEM, PublicKey: host.PublicKey, Nonce: make([]byte, 16), Counter: 1, Time: time.Now().Unix(), MAC: make([]byte, 32)})
	f.Add(uint8(0), []byte(`{"secret":"AAAA","public_key":"AAAA"}`))
	f.Add(uint8(1), renew)
	f.Add(uint8(1), []byte(`{"cert":"LS0tLS1CRUdJTg==","counter":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := []string{"/v1/enroll", "/v1/renew"}[which%2]
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if w.Code == http.StatusOK || w.Code == http.StatusInternalServerError {
			t.Fatalf("%s answered %d to %q", path, w.Code, body)
		}
		store.View(func(tx authority.Tx) error {
			if cs, _ := tx.Certs(); len(cs) != 0 {
				t.Fatal("a fuzzed request issued a certificate")
			}
			return nil
		})
	})
}

func FuzzVerifyBlocklist(f *testing.F) {
	ca := certtest.NewCA(f, "ca")
	pool := cert.NewPool()
	pool.AddCA(ca.Cert)
	f.Add([]byte(`{"version":1,"issued":0,"ca":"` + ca.Cert.Fingerprint() + `","fingerprints":[],"signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var bl authority.SignedBlocklist
		if json.Unmarshal(b, &bl) != nil {
			return
		}
		if authority.VerifyBlocklist(&bl, pool) == nil {
			t.Fatalf("unsigned blocklist accepted: %q", b)
		}
	})
}
