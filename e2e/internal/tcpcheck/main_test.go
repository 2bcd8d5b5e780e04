package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestStreamIsReproducibleAndSeedDependent(t *testing.T) {
	read := func(seed uint64) []byte {
		b, err := io.ReadAll(Stream(seed, 1000))
		if err != nil || len(b) != 1000 {
			t.Fatalf("read %d bytes, err %v", len(b), err)
		}
		return b
	}
	if !bytes.Equal(read(7), read(7)) {
		t.Fatal("same seed gave different streams")
	}
	if bytes.Equal(read(7), read(8)) {
		t.Fatal("different seeds gave the same stream")
	}
}

func TestSendAndServeAgreeOverLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- serve(ln, 1, 10*time.Second, &out) }()

	const n = 5<<20 + 3
	sent, got, err := send(ln.Addr().String(), n, 42, 5*time.Second, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(Stream(42, n))
	sum := sha256.Sum256(want)
	if sent.Bytes != n || sent.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("sender reports %v, want %d bytes with sha256 %x", sent, n, sum)
	}
	if got != sent {
		t.Fatalf("receiver reports %v, sender %v", got, sent)
	}
	if !strings.Contains(out.String(), "received "+sent.String()) {
		t.Fatalf("server printed %q", out.String())
	}
}

func TestSendFailsWhenNobodyListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, _, err := send(addr, 10, 1, 300*time.Millisecond, time.Second); err == nil {
		t.Fatal("send succeeded with no listener")
	}
}

func TestParseResultReadsWhatStringWrites(t *testing.T) {
	r := Result{Bytes: 123, SHA256: "abcd"}
	got, err := parseResult(r.String() + "\n")
	if err != nil || got != r {
		t.Fatalf("parseResult(%q) = %v, %v", r.String(), got, err)
	}
}

func TestGetCmdFailsOnNon200(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "# TYPE x counter\nx 1\n")
	}))
	defer srv.Close()
	if err := getCmd([]string{"-url", srv.URL + "/metrics"}); err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	if err := getCmd([]string{"-url", srv.URL + "/nope"}); err == nil {
		t.Fatal("GET of a 404 succeeded")
	}
}
