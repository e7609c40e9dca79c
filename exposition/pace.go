package exposition

import (
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"time"
)

// A scrape of a large fleet is CPU work that nothing waits for at the
// millisecond, while the probes running next to it are timed: a probe
// whose goroutine waits for a CPU starts late and measures the wait as
// latency. On a machine whose CPUs the probes keep busy (100,000 ICMP
// targets a second take about 1.4 of 2 cores), a full scrape, about a
// second of CPU, took its share of them and put the probes due meanwhile
// hundreds of milliseconds late. So the writer runs at a lower priority:
// between two chunks of work it checks whether goroutines are waiting
// for a CPU, and while any are, it sleeps and leaves its CPU to them. A
// scrape pauses for at most a budget in all, so it always ends.

// pauseStep is one sleep of a paused writer; the runtime's timers make it
// a millisecond or so whatever is asked, when the CPUs are idle.
const pauseStep = time.Millisecond

// pacer is the yield of one scrape's writer (collector.TextWriter.Yield).
// It is not safe for concurrent use.
type pacer struct {
	// left is the pause budget still unspent.
	left time.Duration
	// paused is the time spent paused so far.
	paused time.Duration
	// waiting reports whether goroutines wait for a CPU.
	waiting func() bool
	sleep   func(time.Duration)
	now     func() time.Time
}

// newPacer returns a pacer that pauses for at most budget in all; zero or
// less never pauses.
func newPacer(budget time.Duration) *pacer {
	return &pacer{left: budget, waiting: runnableGoroutines(), sleep: time.Sleep, now: time.Now}
}

// yield sleeps while goroutines wait for a CPU and budget is left, then
// yields the processor once.
func (p *pacer) yield() {
	for p.left > 0 && p.waiting() {
		t := p.now()
		p.sleep(pauseStep)
		d := max(p.now().Sub(t), 0)
		p.left -= d
		p.paused += d
	}
	runtime.Gosched()
}

// runnableGoroutines returns a function that reports whether any
// goroutine is runnable but not running, that is waiting for a CPU. One
// call takes the scheduler's lock briefly (about 0.2 µs).
func runnableGoroutines() func() bool {
	sample := []metrics.Sample{{Name: "/sched/goroutines/runnable:goroutines"}}
	return func() bool {
		metrics.Read(sample)
		return sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > 0
	}
}

// pauseBudget is how long in all a scrape for r may pause: limit, and at
// most half the scrape timeout Prometheus announces in
// X-Prometheus-Scrape-Timeout-Seconds, so that a paused scrape still ends
// well within it.
func pauseBudget(r *http.Request, limit time.Duration) time.Duration {
	v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	if v == "" {
		return limit
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || !(s > 0) {
		return limit
	}
	if half := s * float64(time.Second) / 2; half < float64(limit) {
		return time.Duration(half)
	}
	return limit
}
