package authority_test

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshnode/meshnode/cert/authority"
)

func TestServerCountsRequestsByCodeInItsOwnRegistry(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	h := authority.NewServer(authority.ServerOptions{Authority: f.a, Registerer: reg, Now: f.clock.Now}).Handler()
	for _, body := range []string{"junk", `{"secret":"AAAA","public_key":"AAAA"}`} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/enroll", strings.NewReader(body)))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/health", nil))
	want := map[string]float64{"/v1/enroll malformed": 1, "/v1/enroll token_unknown": 1, "/v1/health ok": 1}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "meshnode_ca_requests_total":
			for _, m := range mf.GetMetric() {
				var path, code string
				for _, l := range m.GetLabel() {
					if l.GetName() == "path" {
						path = l.GetValue()
					} else {
						code = l.GetValue()
					}
				}
				got[path+" "+code] = m.GetCounter().GetValue()
			}
		case "meshnode_ca_active_ca_expiry_seconds":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 364*24*3600 {
				t.Errorf("CA expiry gauge = %v s, want about a year", v)
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("request counters = %v, want %v", got, want)
	}
}
