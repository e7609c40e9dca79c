package exposition

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// discardResponse is a ResponseWriter that counts and drops the body.
type discardResponse struct {
	header http.Header
	code   int
	n      int64
}

func (d *discardResponse) Header() http.Header  { return d.header }
func (d *discardResponse) WriteHeader(code int) { d.code = code }
func (d *discardResponse) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return len(p), nil
}

// cpuTime is the CPU time (user and system) of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSelfRegistry is the self-metrics registry the daemon serves at
// least: Go and process collectors.
func benchSelfRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// BenchmarkExposition measures whole /metrics requests on three roads, in
// each format, plain and gzipped, on a fleet of 10,000 hosts with ICMP and
// SSH (one command) and one of 100,000 ICMP hosts:
//
//   - handler: Handler, as the daemon serves it (text formats written by
//     collector.TextWriter, protobuf encoded from a collector.Gatherer);
//   - transactional: NewTransactionalHandler, promhttp.HandlerForTransactional
//     over the self-metrics registry merged with a collector.Gatherer;
//   - registry: promhttp.HandlerFor over a registry holding NewCollector, for
//     reference (plain only: it is the slowest road by far).
//
// Besides ns/op, B/op and allocs/op it reports cpu-ns/op (user and system
// time of the whole process, so garbage collection and every goroutine
// count) and the body size.
func BenchmarkExposition(b *testing.B) {
	fleets := []struct {
		name    string
		hosts   int
		withSSH bool
	}{
		{"10k_icmp+ssh", 10_000, true},
		{"100k_icmp", 100_000, false},
	}
	formats := []struct {
		name, accept string
		want         expfmt.FormatType
	}{
		{"text", "text/plain;version=0.0.4", expfmt.TypeTextPlain},
		{"openmetrics", "application/openmetrics-text;version=1.0.0", expfmt.TypeOpenMetrics},
		{"proto", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", expfmt.TypeProtoDelim},
	}
	for _, fl := range fleets {
		store, _ := handlerStore(fl.hosts, fl.withSSH)
		h, err := NewHandler(Options{Registry: benchSelfRegistry(), Snapshot: store.Snapshot})
		if err != nil {
			b.Fatal(err)
		}
		reg := benchSelfRegistry()
		reg.MustRegister(collector.NewCollector(store))
		roads := []struct {
			name      string
			h         http.Handler
			plainOnly bool
		}{
			{"handler", h, false},
			{"transactional", NewTransactionalHandler(Options{Registry: benchSelfRegistry(), Snapshot: store.Snapshot}), false},
			{"registry", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
				Registry: reg, ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true,
				OfferedCompressions: []promhttp.Compression{promhttp.Identity, promhttp.Gzip},
			}), true},
		}
		for _, rd := range roads {
			for _, f := range formats {
				for _, enc := range []string{"identity", "gzip"} {
					if rd.plainOnly && enc != "identity" {
						continue
					}
					b.Run(fl.name+"/"+rd.name+"/"+f.name+"/"+enc, func(b *testing.B) {
						req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
						req.Header.Set("Accept", f.accept)
						req.Header.Set("Accept-Encoding", enc)
						var w *discardResponse
						b.ReportAllocs()
						cpu0 := cpuTime(b)
						for b.Loop() {
							w = &discardResponse{header: http.Header{}, code: http.StatusOK}
							rd.h.ServeHTTP(w, req)
						}
						cpu := cpuTime(b) - cpu0
						if w.code != http.StatusOK {
							b.Fatalf("status %d", w.code)
						}
						if got := expfmt.ResponseFormat(w.header).FormatType(); got != f.want {
							b.Fatalf("Content-Type %q, want %s", w.header.Get("Content-Type"), f.name)
						}
						b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
						b.ReportMetric(float64(w.n), "body-bytes")
					})
				}
			}
		}
	}
}

// BenchmarkConcurrentScrapes measures the memory a burst of scrapes costs:
// 40 scrapes at once of 200,000 ICMP targets, through the daemon's handler.
// It reports the peak heap in use above the heap before the burst
// (peak-heap-MB, sampled every millisecond) next to the usual figures.
func BenchmarkConcurrentScrapes(b *testing.B) {
	const hosts, scrapes = 200_000, 40
	store, _ := handlerStore(hosts, false)
	h, err := NewHandler(Options{Registry: benchSelfRegistry(), Snapshot: store.Snapshot, MaxRequestsInFlight: scrapes})
	if err != nil {
		b.Fatal(err)
	}
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			var peak uint64
			var idle runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&idle)
			stop := make(chan struct{})
			sampled := make(chan uint64)
			go func() {
				var m runtime.MemStats
				var highest uint64
				t := time.NewTicker(time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						sampled <- highest
						return
					case <-t.C:
						runtime.ReadMemStats(&m)
						highest = max(highest, m.HeapInuse)
					}
				}
			}()
			for b.Loop() {
				var wg sync.WaitGroup
				for range scrapes {
					wg.Go(func() {
						req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
						req.Header.Set("Accept-Encoding", enc)
						w := &discardResponse{header: http.Header{}, code: http.StatusOK}
						h.ServeHTTP(w, req)
						if w.code != http.StatusOK {
							b.Errorf("status %d", w.code)
						}
					})
				}
				wg.Wait()
			}
			close(stop)
			peak = <-sampled
			b.ReportMetric(float64(peak-min(peak, idle.HeapInuse))/(1<<20), "peak-heap-MB")
		})
	}
}
