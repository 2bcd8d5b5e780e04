package promtest

import (
	"testing"

	"github.com/meshnode/meshnode/internal/prom"
)

func TestCompareCountValue(t *testing.T) {
	reg := prom.NewRegistry()
	v := prom.NewCounterVec(prom.CounterOpts{Name: "x_total", Help: "Xs."}, []string{"k"})
	v.WithLabelValues("a").Inc()
	v.WithLabelValues("b")
	reg.MustRegister(v, prom.NewGaugeFunc(prom.GaugeOpts{Name: "x", Help: "X."}, func() float64 { return 3 }))
	want := `
# HELP x_total Xs.
# TYPE x_total counter
x_total{k="a"} 1
x_total{k="b"} 0
`
	if err := Compare(reg, want, "x_total"); err != nil {
		t.Fatal(err)
	}
	if err := Compare(reg, want); err == nil {
		t.Fatal("Compare of all families matched one")
	}
	// x is a prefix of x_total's name but not its family.
	if n, err := Count(reg, "x"); err != nil || n != 1 {
		t.Fatalf("Count(x) = %d, %v", n, err)
	}
	if n, err := Count(reg, "x_total"); err != nil || n != 2 {
		t.Fatalf("Count(x_total) = %d, %v", n, err)
	}
	if _, err := Count(reg, "y"); err == nil {
		t.Fatal("Count of a missing family is no error")
	}
	if got := Value(v.WithLabelValues("a")); got != 1 {
		t.Fatalf("Value = %v", got)
	}
}
