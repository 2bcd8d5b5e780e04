// Package prom is the daemon's own small Prometheus exporter: counters, gauges, labelled
// counter families and values read at scrape time, served in the Prometheus text format
// (version 0.0.4).
//
// It replaces github.com/prometheus/client_golang in meshnode (issue 18, resident memory):
// that client brings google.golang.org/protobuf's reflection runtime with it, about 2.5 MiB
// of code and read-only data that the kernel maps in whole, so every daemon paid for it in
// RSS without using it. The names mirror client_golang's (NewCounterVec, WithLabelValues,
// NewGaugeFunc, MustRegister) for the subset meshnode uses. The CA service (mesh-cert) still
// uses client_golang.
package prom

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Labels are constant labels of a metric.
type Labels map[string]string

// Opts name and describe a metric.
type Opts struct {
	Name, Help  string
	ConstLabels Labels
}

// CounterOpts and GaugeOpts are Opts, named as client_golang names them.
type (
	CounterOpts = Opts
	GaugeOpts   = Opts
)

// Collector is anything that writes samples at scrape time.
type Collector interface {
	Collect(w *Writer)
}

// Registerer takes collectors; *Registry is one.
type Registerer interface {
	// Register adds c, or says why not (a metric of that name is registered already).
	Register(c Collector) error
	// MustRegister registers each of cs and panics where Register would fail.
	MustRegister(cs ...Collector)
}

// Registry holds the collectors one endpoint serves.
type Registry struct {
	mu    sync.Mutex
	cs    []Collector
	names map[string]bool // of the collectors that have one name (not CollectorFunc)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

// named is a collector of one metric family.
type named interface{ metricName() string }

// Register adds c; a second metric of the same name is refused.
func (r *Registry) Register(c Collector) error {
	if c == nil {
		return fmt.Errorf("prom: nil collector")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := c.(named); ok {
		if r.names[n.metricName()] {
			return fmt.Errorf("prom: %s is registered already", n.metricName())
		}
		r.names[n.metricName()] = true
	}
	r.cs = append(r.cs, c)
	return nil
}

// MustRegister registers cs and panics on the first that Register refuses.
func (r *Registry) MustRegister(cs ...Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Collect writes every registered collector's samples.
func (r *Registry) Collect(w *Writer) {
	r.mu.Lock()
	cs := slices.Clone(r.cs)
	r.mu.Unlock()
	for _, c := range cs {
		c.Collect(w)
	}
}

// WriteText writes the registry in the text format, families sorted by name.
func (r *Registry) WriteText(out io.Writer) error {
	var w Writer
	r.Collect(&w)
	_, err := io.WriteString(out, w.text(nil))
	return err
}

// ServeHTTP serves the registry to a Prometheus scrape.
func (r *Registry) ServeHTTP(rw http.ResponseWriter, _ *http.Request) {
	rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	r.WriteText(rw)
}

// Writer gathers the samples of one scrape.
type Writer struct {
	fams map[string]*family
}

type family struct {
	help, typ string
	samples   []sample
}

type sample struct {
	labels string // rendered, with braces, or ""
	v      float64
}

// Sample adds one sample of the family name (help and typ, "counter" or "gauge", are taken
// from its first sample); labels are name, value pairs.
func (w *Writer) Sample(name, help, typ string, v float64, labels ...string) {
	if w.fams == nil {
		w.fams = map[string]*family{}
	}
	f := w.fams[name]
	if f == nil {
		f = &family{help: help, typ: typ}
		w.fams[name] = f
	}
	f.samples = append(f.samples, sample{labels: renderLabels(labels), v: v})
}

// text renders the families named (all when names is empty), sorted by name and label set.
func (w *Writer) text(names []string) string {
	keys := make([]string, 0, len(w.fams))
	for k := range w.fams {
		if len(names) == 0 || slices.Contains(names, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		f := w.fams[k]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", k, escapeHelp(f.help), k, f.typ)
		slices.SortStableFunc(f.samples, func(a, b sample) int { return strings.Compare(a.labels, b.labels) })
		for _, s := range f.samples {
			b.WriteString(k)
			b.WriteString(s.labels)
			b.WriteByte(' ')
			b.WriteString(formatValue(s.v))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Text is the text format of the families named from c (all when none are named); for tests
// and the operator's tools.
func Text(c Collector, names ...string) string {
	var w Writer
	c.Collect(&w)
	return w.text(names)
}

func renderLabels(kv []string) string {
	if len(kv) < 2 {
		return ""
	}
	type pair struct{ k, v string }
	ps := make([]pair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.k, b.k) })
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.k)
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(p.v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func constPairs(l Labels) []string {
	kv := make([]string, 0, 2*len(l))
	for k, v := range l {
		kv = append(kv, k, v)
	}
	return kv
}

// Counter counts up by whole numbers; Inc is one atomic add, so it is fit for the packet paths.
type Counter struct {
	opts   Opts
	labels []string // name, value pairs
	n      atomic.Uint64
}

// NewCounter returns a counter to register.
func NewCounter(o CounterOpts) *Counter { return &Counter{opts: o, labels: constPairs(o.ConstLabels)} }

func (c *Counter) metricName() string    { return c.opts.Name }
func (v *CounterVec) metricName() string { return v.opts.Name }
func (g *Gauge) metricName() string      { return g.opts.Name }
func (g *Func) metricName() string       { return g.opts.Name }

// Inc adds one.
func (c *Counter) Inc() { c.n.Add(1) }

// Value is the count.
func (c *Counter) Value() float64 { return float64(c.n.Load()) }

// Collect writes the counter.
func (c *Counter) Collect(w *Writer) {
	w.Sample(c.opts.Name, c.opts.Help, "counter", c.Value(), c.labels...)
}

// CounterVec is a family of counters told apart by the values of its labels.
type CounterVec struct {
	opts   Opts
	names  []string
	mu     sync.RWMutex
	counts map[string]*Counter
}

// NewCounterVec returns a family with the label names given.
func NewCounterVec(o CounterOpts, labelNames []string) *CounterVec {
	return &CounterVec{opts: o, names: labelNames, counts: map[string]*Counter{}}
}

// WithLabelValues is the counter of these label values (as many as the family's names),
// made on first use; keep the result where a path counts often.
func (v *CounterVec) WithLabelValues(values ...string) *Counter {
	if len(values) != len(v.names) {
		panic(fmt.Sprintf("prom: %s has %d labels, got %d values", v.opts.Name, len(v.names), len(values)))
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c := v.counts[key]
	v.mu.RUnlock()
	if c != nil {
		return c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.counts[key]; c == nil {
		kv := constPairs(v.opts.ConstLabels)
		for i, n := range v.names {
			kv = append(kv, n, values[i])
		}
		c = &Counter{opts: v.opts, labels: kv}
		v.counts[key] = c
	}
	return c
}

// Collect writes every counter of the family.
func (v *CounterVec) Collect(w *Writer) {
	v.mu.RLock()
	cs := make([]*Counter, 0, len(v.counts))
	for _, c := range v.counts {
		cs = append(cs, c)
	}
	v.mu.RUnlock()
	for _, c := range cs {
		c.Collect(w)
	}
}

// Gauge is a value set by its owner.
type Gauge struct {
	opts Opts
	bits atomic.Uint64
}

// NewGauge returns a gauge at 0.
func NewGauge(o GaugeOpts) *Gauge { return &Gauge{opts: o} }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Value is the value last set.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// Collect writes the gauge.
func (g *Gauge) Collect(w *Writer) {
	w.Sample(g.opts.Name, g.opts.Help, "gauge", g.Value(), constPairs(g.opts.ConstLabels)...)
}

// Func is a gauge or counter whose value a function gives at scrape time.
type Func struct {
	opts Opts
	typ  string
	f    func() float64
}

// NewGaugeFunc is a gauge read from f at each scrape.
func NewGaugeFunc(o GaugeOpts, f func() float64) *Func { return &Func{opts: o, typ: "gauge", f: f} }

// NewCounterFunc is a counter read from f at each scrape (f must never go down).
func NewCounterFunc(o CounterOpts, f func() float64) *Func {
	return &Func{opts: o, typ: "counter", f: f}
}

// Value calls the function.
func (g *Func) Value() float64 { return g.f() }

// Collect writes the value.
func (g *Func) Collect(w *Writer) {
	w.Sample(g.opts.Name, g.opts.Help, g.typ, g.f(), constPairs(g.opts.ConstLabels)...)
}

// CollectorFunc adapts a function to a Collector, for families written by hand.
type CollectorFunc func(w *Writer)

// Collect calls f.
func (f CollectorFunc) Collect(w *Writer) { f(w) }

// Samples maps each sample of c, named as the text format names it (`name{label="v"}`), to
// its value, for tests.
func Samples(c Collector) map[string]float64 {
	var w Writer
	c.Collect(&w)
	out := map[string]float64{}
	for name, f := range w.fams {
		for _, s := range f.samples {
			out[name+s.labels] = s.v
		}
	}
	return out
}
