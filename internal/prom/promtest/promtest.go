// Package promtest reads internal/prom collectors in tests, in place of client_golang's
// testutil.
package promtest

import (
	"fmt"
	"strings"

	"github.com/meshnode/meshnode/internal/prom"
)

// Compare checks the text of the families named against want (surrounding blank lines and
// spaces ignored).
func Compare(c prom.Collector, want string, names ...string) error {
	got := prom.Text(c, names...)
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		return fmt.Errorf("metrics differ:\ngot:\n%s\nwant:\n%s", got, want)
	}
	return nil
}

// Count is how many samples c has of the family name; an error when it has none.
func Count(c prom.Collector, name string) (int, error) {
	n := 0
	for k := range prom.Samples(c) {
		if k == name || strings.HasPrefix(k, name+"{") {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("promtest: no metric %s", name)
	}
	return n, nil
}

// Value is the value of a collector of exactly one sample (a counter, a gauge, one child of
// a family).
func Value(c prom.Collector) float64 {
	s := prom.Samples(c)
	if len(s) != 1 {
		panic(fmt.Sprintf("promtest: Value of a collector with %d samples", len(s)))
	}
	for _, v := range s {
		return v
	}
	return 0
}
