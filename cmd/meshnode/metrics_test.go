package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"testing"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/internal/version"
	"github.com/meshnode/meshnode/overlay"
)

// TestBuildInfoIsServedOnTheMetricsEndpoint scrapes the stats endpoint the daemon serves.
func TestBuildInfoIsServedOnTheMetricsEndpoint(t *testing.T) {
	reg := prom.NewRegistry()
	reg.MustRegister(buildInfo())
	var logged bytes.Buffer
	srv, err := startStats(overlay.StatsConfig{Listen: "127.0.0.1:0", Path: "/metrics"}, reg, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The port the kernel chose is in the log line that announces the endpoint.
	m := regexp.MustCompile(`listen=(127\.0\.0\.1:\d+)`).FindStringSubmatch(logged.String())
	if m == nil {
		t.Fatalf("no listen address logged: %s", logged.String())
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	v := version.Get()
	want := `meshnode_build_info{commit="` + regexp.QuoteMeta(v.Commit) + `",goversion="` + regexp.QuoteMeta(runtime.Version()) +
		`",version="` + regexp.QuoteMeta(v.Version) + `"} 1`
	if !regexp.MustCompile(`(?m)^` + want + `$`).Match(body) {
		t.Fatalf("no %s in\n%s", want, body)
	}
}
