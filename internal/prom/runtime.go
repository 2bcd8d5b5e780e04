package prom

import (
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
)

// GoCollector writes the Go runtime's gauges under client_golang's names (a subset:
// go_goroutines, go_threads, go_info and the go_memstats_ figures dashboards plot), read
// from runtime/metrics, which does not stop the world.
func GoCollector() Collector {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	return CollectorFunc(func(w *Writer) {
		s := make([]metrics.Sample, len(samples))
		copy(s, samples)
		metrics.Read(s)
		u := func(i int) float64 {
			if s[i].Value.Kind() == metrics.KindUint64 {
				return float64(s[i].Value.Uint64())
			}
			return 0
		}
		w.Sample("go_goroutines", "Number of goroutines that currently exist.", "gauge", float64(runtime.NumGoroutine()))
		w.Sample("go_info", "Information about the Go environment.", "gauge", 1, "version", runtime.Version())
		w.Sample("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.", "gauge", u(0))
		w.Sample("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", "gauge", u(0))
		w.Sample("go_memstats_sys_bytes", "Number of bytes obtained from system.", "gauge", u(1))
		w.Sample("go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", "gauge", u(2))
		w.Sample("go_gc_cycles_total", "Completed garbage collection cycles.", "counter", u(3))
		if v, ok := procStatus("Threads:"); ok {
			w.Sample("go_threads", "Number of OS threads created.", "gauge", v)
		}
	})
}

// ProcessCollector writes client_golang's process_ metrics from /proc/self.
func ProcessCollector() Collector {
	return CollectorFunc(func(w *Writer) {
		if f, ok := procStat(); ok {
			// Fields after the command (which may hold spaces) counted from "state" = 0:
			// utime 11, stime 12, starttime 19, vsize 20, rss 21. The kernel reports times
			// in USER_HZ, which is 100 on Linux whatever the kernel's own HZ.
			const hz = 100
			w.Sample("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", (f[11]+f[12])/hz)
			w.Sample("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", f[20])
			w.Sample("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", f[21]*float64(os.Getpagesize()))
			if bt, ok := bootTime(); ok {
				w.Sample("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", bt+f[19]/hz)
			}
		}
		if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
			w.Sample("process_open_fds", "Number of open file descriptors.", "gauge", float64(len(ents)))
		}
		if n, ok := maxFDs(); ok {
			w.Sample("process_max_fds", "Maximum number of open file descriptors.", "gauge", n)
		}
	})
}

// procStat is /proc/self/stat's numeric fields from "state" on (state itself is 0).
func procStat() ([]float64, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 22 {
		return nil, false
	}
	out := make([]float64, len(fs))
	for j, s := range fs {
		out[j], _ = strconv.ParseFloat(s, 64)
	}
	return out, true
}

func procStatus(key string) (float64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func bootTime() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
