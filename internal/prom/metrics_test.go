package prom

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestTextFormat(t *testing.T) {
	reg := NewRegistry()
	v := NewCounterVec(CounterOpts{Name: "x_total", Help: "Xs by kind.\nSecond line \\ here."}, []string{"kind", "a"})
	v.WithLabelValues("b", `quo"te`).Inc()
	v.WithLabelValues("a", "line\nbreak").Inc()
	v.WithLabelValues("a", "line\nbreak").Inc()
	g := NewGauge(GaugeOpts{Name: "build_info", Help: "Build.", ConstLabels: Labels{"version": "1", "commit": "c"}})
	g.Set(1)
	reg.MustRegister(v, g, NewGaugeFunc(GaugeOpts{Name: "neg", Help: "Negative."}, func() float64 { return -2.5 }))
	want := `# HELP build_info Build.
# TYPE build_info gauge
build_info{commit="c",version="1"} 1
# HELP neg Negative.
# TYPE neg gauge
neg -2.5
# HELP x_total Xs by kind.\nSecond line \\ here.
# TYPE x_total counter
x_total{a="line\nbreak",kind="a"} 2
x_total{a="quo\"te",kind="b"} 1
`
	if got := Text(reg); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := Text(reg, "neg"); got != "# HELP neg Negative.\n# TYPE neg gauge\nneg -2.5\n" {
		t.Fatalf("Text of one family:\n%s", got)
	}
	if got := Samples(v); len(got) != 2 || got[`x_total{a="line\nbreak",kind="a"}`] != 2 {
		t.Fatalf("Samples = %v", got)
	}

	srv := httptest.NewServer(reg)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type %q", ct)
	}
	if string(body) != want {
		t.Fatalf("served\n%s", body)
	}
}

func TestRegisterRefusesASecondMetricOfTheSameName(t *testing.T) {
	reg := NewRegistry()
	if err := reg.Register(NewCounter(CounterOpts{Name: "a"})); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(NewGaugeFunc(GaugeOpts{Name: "a"}, func() float64 { return 0 })); err == nil {
		t.Fatal("a second metric named a was registered")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("MustRegister of a duplicate did not panic")
		}
	}()
	reg.MustRegister(NewCounter(CounterOpts{Name: "a"}))
}

func TestCounterVecIsSafeForConcurrentUse(t *testing.T) {
	v := NewCounterVec(CounterOpts{Name: "c"}, []string{"l"})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				v.WithLabelValues([]string{"x", "y"}[i%2]).Inc()
			}
			Text(v)
		}()
	}
	wg.Wait()
	s := Samples(v)
	if s[`c{l="x"}`] != 2000 || s[`c{l="y"}`] != 2000 || len(s) != 2 {
		t.Fatalf("samples %v", s)
	}
}

func TestGoAndProcessCollectors(t *testing.T) {
	s := Samples(GoCollector())
	if s["go_goroutines"] < 1 || s["go_memstats_sys_bytes"] <= 0 || s["go_threads"] < 1 {
		t.Fatalf("go collector: %v", s)
	}
	p := Samples(ProcessCollector())
	if p["process_resident_memory_bytes"] < 1<<20 || p["process_open_fds"] < 1 || p["process_max_fds"] < 1 {
		t.Fatalf("process collector: %v", p)
	}
	// The start time is in the recent past and the CPU time is what the test has used so far,
	// not a misread field.
	if st := p["process_start_time_seconds"]; st < 1.6e9 || st > 4e9 {
		t.Fatalf("process_start_time_seconds = %v", st)
	}
	if c := p["process_cpu_seconds_total"]; c < 0 || c > 3600 {
		t.Fatalf("process_cpu_seconds_total = %v", c)
	}
}
