package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Pool runs probes with bounded concurrency and start rate. Each probe type
// has a FIFO queue, a token bucket, a concurrency limit and one dispatcher
// goroutine (a batch type one per CPU, see batchDispatchers); an overall
// concurrency limit spans all types. Submit never blocks and never queues a
// target twice: a target that is still queued or running when its next turn
// comes is skipped and counted.
type Pool struct {
	logger *slog.Logger
	sink   func(probe.Result)
	// batchSink, when set, takes the results of batch probers a batch at
	// a time instead of sink.
	batchSink func([]probe.Result)
	// types holds one entry per probe type that has a prober. The map is
	// built by NewPool and never modified, so it is read without a lock.
	types  map[string]*poolType
	global *poolSem

	skipped      *prometheus.CounterVec
	skippedTotal atomic.Uint64

	// running is set while Run is active.
	running atomic.Bool

	// seriesMu guards series.
	seriesMu sync.Mutex
	// series holds the {set, probe} label pairs of skipped counters created
	// so far, so Forget can delete those of removed sets.
	series map[[2]string]struct{}
}

// PoolStats is a point-in-time view of the pool, for tests and benchmarks.
type PoolStats struct {
	// InFlight and Waiting count running and queued probes per probe type.
	InFlight, Waiting map[string]int
	// Skipped counts every skipped submission since the pool was created.
	Skipped uint64
}

// poolType is the queue, limits and metrics of one probe type.
type poolType struct {
	name   string
	prober probe.Prober
	// batch is prober as a BatchProber, if it is one: the type is then
	// dispatched in batches, without a goroutine per probe.
	batch   probe.BatchProber
	limiter *rate.Limiter
	sem     *poolSem
	// notify has capacity one; Submit signals it after queueing a job.
	notify chan struct{}

	inFlightGauge prometheus.Gauge
	waitingGauge  prometheus.Gauge
	lag           prometheus.Observer
	inFlight      atomic.Int64
	waiting       atomic.Int64

	// limitsMu guards limitsChanged.
	limitsMu sync.Mutex
	// limitsChanged is closed and replaced by SetLimits to restart a
	// dispatcher waiting for a start token under the old rate.
	limitsChanged chan struct{}

	// taking has capacity one and holds a token while a batch
	// dispatcher takes jobs.
	taking chan struct{}

	// mu guards queue, head and active.
	mu sync.Mutex
	// queue[head:] are the jobs not yet picked up by the dispatcher.
	queue []poolJob
	head  int
	// active holds the targets that are queued, being dispatched or
	// running.
	active activeSet
}

// activeSet is a set of target keys indexed by their precomputed hash
// (config.Target.KeyHash): at 100,000 ICMP targets a second, hashing and
// comparing three strings per Submit and per completion was a fifth of
// the exporter's CPU. It keeps the active target itself, whose key settles
// a hash match.
type activeSet struct {
	idx config.KeyIndex[*config.Target]
}

func newActiveSet() activeSet { return activeSet{} }

// add inserts t's key and reports whether it was absent.
func (a *activeSet) add(t *config.Target) bool { return a.addKey(t.KeyHash(), t) }

// remove deletes t's key.
func (a *activeSet) remove(t *config.Target) { a.removeKey(t.KeyHash(), t) }

// addKey is add with the hash given.
func (a *activeSet) addKey(h uint64, t *config.Target) bool {
	k := t.Key()
	if _, ok := a.idx.Get(h, k, (*config.Target).Key); ok {
		return false
	}
	a.idx.Put(h, k, t, (*config.Target).Key)
	return true
}

// removeKey is remove with the hash given.
func (a *activeSet) removeKey(h uint64, t *config.Target) {
	a.idx.Delete(h, t.Key(), (*config.Target).Key)
}

// len returns the number of active keys.
func (a *activeSet) len() int { return a.idx.Len() }

// poolJob is one queued probe.
type poolJob struct {
	t   *config.Target
	due time.Time
}

// NewPool returns a Pool that runs probes with probers (keyed by probe type,
// see config.ProbeTypes) under the limits of g and hands every result to
// sink. Its metrics are registered on reg, which may be nil to skip
// registration. A nil logger discards log output. NewPool starts no
// goroutine; call Run.
func NewPool(g config.Global, probers map[string]probe.Prober, sink func(probe.Result), logger *slog.Logger, reg prometheus.Registerer) (*Pool, error) {
	if sink == nil {
		return nil, errors.New("pool: nil result sink")
	}
	if len(probers) == 0 {
		return nil, errors.New("pool: no probers")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	inFlight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "fleet",
		Subsystem: "pool",
		Name:      "in_flight",
		Help:      "Number of probes currently running, by probe type.",
	}, []string{"probe"})
	waiting := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "fleet",
		Subsystem: "pool",
		Name:      "waiting",
		Help:      "Number of probes queued and not yet started, by probe type.",
	}, []string{"probe"})
	skipped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "fleet",
		Name:      "probes_skipped_total",
		Help:      "Total number of probe turns skipped because the previous run of the same target was still queued or running.",
	}, []string{"set", "probe"})
	lag := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "fleet",
		Subsystem: "scheduler",
		Name:      "lag_seconds",
		Help:      "Time between when a probe was due and when it started, by probe type.",
		Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"probe"})

	p := &Pool{
		logger:  logger,
		sink:    sink,
		types:   make(map[string]*poolType, len(probers)),
		global:  &poolSem{limit: poolConcurrency(g.Concurrency)},
		skipped: skipped,
		series:  make(map[[2]string]struct{}),
	}
	for name, pr := range probers {
		if !poolKnownType(name) {
			return nil, fmt.Errorf("pool: unknown probe type %q", name)
		}
		if pr == nil {
			return nil, fmt.Errorf("pool: nil prober for probe type %q", name)
		}
		l := g.Limits.For(name)
		bp, _ := pr.(probe.BatchProber)
		p.types[name] = &poolType{
			name:          name,
			prober:        pr,
			batch:         bp,
			limiter:       rate.NewLimiter(poolRate(l), poolBurst(l)),
			sem:           &poolSem{limit: poolConcurrency(l.Concurrency)},
			notify:        make(chan struct{}, 1),
			taking:        make(chan struct{}, 1),
			limitsChanged: make(chan struct{}),
			inFlightGauge: inFlight.WithLabelValues(name),
			waitingGauge:  waiting.WithLabelValues(name),
			lag:           lag.WithLabelValues(name),
			active:        newActiveSet(),
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{inFlight, waiting, skipped, lag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pool: register metrics: %w", err)
			}
		}
	}
	return p, nil
}

func poolKnownType(name string) bool {
	for _, t := range config.ProbeTypes() {
		if t == name {
			return true
		}
	}
	return false
}

// poolConcurrency maps a configured concurrency to a semaphore size; a
// non-positive value means no bound.
func poolConcurrency(n int) int {
	if n <= 0 {
		return math.MaxInt
	}
	return n
}

// poolRate maps a configured start rate to a limiter rate; zero (or less)
// means unlimited.
func poolRate(l config.Limit) rate.Limit {
	if l.Rate <= 0 {
		return rate.Inf
	}
	return rate.Limit(l.Rate)
}

// poolBurst returns at least one so that a finite rate can ever grant a
// token (rate.Limiter.Wait fails when the burst is below one).
func poolBurst(l config.Limit) int {
	return max(l.Burst, 1)
}

// Submit queues t, due at due. It never blocks. It returns false, and counts
// fleet_probes_skipped_total, when a probe of the same target is still queued
// or running, or when the pool has no prober for t's type.
func (p *Pool) Submit(t *config.Target, due time.Time) bool {
	pt := p.types[t.Probe]
	if pt == nil {
		p.logger.Debug("No prober for probe type", "set", t.Set, "host", t.Host, "probe", t.Probe)
		p.countSkip(t)
		return false
	}
	pt.mu.Lock()
	if !pt.active.add(t) {
		pt.mu.Unlock()
		p.countSkip(t)
		return false
	}
	pt.queue = append(pt.queue, poolJob{t: t, due: due})
	pt.mu.Unlock()
	pt.waiting.Add(1)
	pt.waitingGauge.Inc()
	pt.wake()
	return true
}

// Due is one target falling due at At, as the scheduler hands a pass of
// them to SubmitBatch.
type Due struct {
	Target *config.Target
	At     time.Time
}

// SubmitBatch queues every target of ds as Submit would, taking each probe
// type's lock once per run of targets of that type and waking its
// dispatchers once: a pass of 1,000 due ICMP targets is then one queue
// append and one dispatch instead of a wake-up per target, which had the
// dispatcher take a pass in small pieces.
func (p *Pool) SubmitBatch(ds []Due) {
	var skips []*config.Target
	for i := 0; i < len(ds); {
		pt := p.types[ds[i].Target.Probe]
		if pt == nil {
			p.logger.Debug("No prober for probe type", "set", ds[i].Target.Set, "host", ds[i].Target.Host, "probe", ds[i].Target.Probe)
			skips = append(skips, ds[i].Target)
			i++
			continue
		}
		n := 0
		pt.mu.Lock()
		for ; i < len(ds) && ds[i].Target.Probe == pt.name; i++ {
			t := ds[i].Target
			if !pt.active.add(t) {
				skips = append(skips, t)
				continue
			}
			pt.queue = append(pt.queue, poolJob{t: t, due: ds[i].At})
			n++
		}
		pt.mu.Unlock()
		if n > 0 {
			pt.waiting.Add(int64(n))
			pt.waitingGauge.Add(float64(n))
			pt.wake() // once per run of one type; a second wake is a no-op
		}
	}
	for _, t := range skips {
		p.countSkip(t)
	}
}

// wake tells a waiting dispatcher of pt that jobs are queued.
func (pt *poolType) wake() {
	select {
	case pt.notify <- struct{}{}:
	default:
	}
}

func (p *Pool) countSkip(t *config.Target) {
	p.skippedTotal.Add(1)
	p.seriesMu.Lock()
	p.series[[2]string{t.Set, t.Probe}] = struct{}{}
	p.seriesMu.Unlock()
	p.skipped.WithLabelValues(t.Set, t.Probe).Inc()
}

// Run dispatches queued probes until ctx ends. Then it stops dispatching,
// cancels the probes in flight, waits for them to return, drops the jobs
// still queued and returns nil. Results of cancelled probes are not sent to
// the sink. Run returns an error if the pool is already running.
func (p *Pool) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("pool: already running")
	}
	defer p.running.Store(false)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var probes, dispatchers sync.WaitGroup
	for _, pt := range p.types {
		if pt.batch != nil {
			bs := &poolBatchSink{p: p, pt: pt, runCtx: runCtx, probes: &probes}
			for range batchDispatchers() {
				dispatchers.Go(func() { p.dispatchBatch(runCtx, pt, bs) })
			}
			continue
		}
		dispatchers.Go(func() { p.dispatch(runCtx, pt, &probes) })
	}
	<-ctx.Done()
	cancel()
	dispatchers.Wait()
	probes.Wait()
	for _, pt := range p.types {
		pt.drop()
	}
	return nil
}

// dispatch is the loop of one probe type: take the next job, wait for a rate
// token, a type slot and a global slot, then start the probe.
func (p *Pool) dispatch(ctx context.Context, pt *poolType, probes *sync.WaitGroup) {
	for {
		job, ok := pt.next(ctx)
		if !ok {
			return
		}
		if !p.acquire(ctx, pt) {
			// Shutting down: the job is dropped like the rest of the queue.
			pt.done(job.t)
			pt.waiting.Add(-1)
			pt.waitingGauge.Dec()
			return
		}
		start := time.Now()
		pt.waiting.Add(-1)
		pt.waitingGauge.Dec()
		pt.inFlight.Add(1)
		pt.inFlightGauge.Inc()
		pt.lag.Observe(start.Sub(job.due).Seconds())
		probes.Add(1)
		go p.probe(ctx, pt, job, start, probes)
	}
}

// SetBatchSink makes the pool hand the results of batch probers (see
// probe.BatchProber) to fn, a batch at a time, instead of one by one to the
// sink given to NewPool; the results of other probers still go there. Call
// it before Run. fn must not keep the slice, which the pool reuses: at
// 100,000 results a second a fresh slice per batch was most of the
// exporter's garbage. It may keep copies of the results.
func (p *Pool) SetBatchSink(fn func([]probe.Result)) {
	p.batchSink = fn
}

// resultPool recycles the result slices ProbesDone hands to the batch sink.
var resultPool = sync.Pool{New: func() any { s := make([]probe.Result, 0, 64); return &s }}

// poolBatchMax bounds the requests handed to a batch prober at once.
const poolBatchMax = 4096

// batchDispatchers is the number of dispatchers of a batch probe type: one
// per CPU the runtime uses, at most four. While one is inside ProbeBatch
// (for ICMP mostly in sendmmsg, where loopback and fast links also answer
// the echo in the sender's system call) the next takes the jobs that fell
// due meanwhile, so one type's throughput is not bounded by one goroutine.
// Jobs are still taken oldest first under the type's lock, and every limit
// is shared.
func batchDispatchers() int {
	return min(max(runtime.GOMAXPROCS(0), 1), 4)
}

// dispatchBatch is the loop of a batch probe type: it waits for the first
// job, a rate token and both slots as dispatch does, then takes every
// further queued job that has a token and slots at once, and starts them
// all with one ProbeBatch call. Completions come back through bs.
func (p *Pool) dispatchBatch(ctx context.Context, pt *poolType, bs *poolBatchSink) {
	reqs := make([]probe.Request, 0, 64)
	for {
		// One dispatcher at a time takes jobs, so that a pass is taken
		// whole; the others meanwhile run their ProbeBatch calls.
		select {
		case pt.taking <- struct{}{}:
		case <-ctx.Done():
			return
		}
		job, ok := pt.next(ctx)
		if !ok {
			<-pt.taking
			return
		}
		if !p.acquire(ctx, pt) {
			<-pt.taking
			pt.done(job.t)
			pt.waiting.Add(-1)
			pt.waitingGauge.Dec()
			return
		}
		start := time.Now()
		reqs = append(reqs[:0], poolRequest(job, start))
		reqs = p.takeReady(pt, reqs, start)
		<-pt.taking
		n := len(reqs)
		pt.waiting.Add(int64(-n))
		pt.waitingGauge.Sub(float64(n))
		pt.inFlight.Add(int64(n))
		pt.inFlightGauge.Add(float64(n))
		for i := range reqs {
			pt.lag.Observe(start.Sub(reqs[i].Due).Seconds())
		}
		bs.probes.Add(n)
		pt.batch.ProbeBatch(ctx, reqs, bs)
		clear(reqs)
	}
}

// poolRequest is the batch request of job, started at start, under the same
// timeout probe gives it.
func poolRequest(job poolJob, start time.Time) probe.Request {
	timeout := job.t.Timeout
	if timeout <= 0 {
		timeout = job.t.Interval
	}
	return probe.Request{Target: job.t, Due: job.due, Start: start, Timeout: timeout}
}

// takeReady appends to reqs the queued jobs, oldest first, that get a type
// slot, a global slot and a rate token without waiting, up to poolBatchMax.
func (p *Pool) takeReady(pt *poolType, reqs []probe.Request, start time.Time) []probe.Request {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for pt.head < len(pt.queue) && len(reqs) < poolBatchMax {
		if !pt.sem.tryAcquire() {
			break
		}
		if !p.global.tryAcquire() {
			pt.sem.release()
			break
		}
		if !pt.limiter.Allow() {
			p.global.release()
			pt.sem.release()
			break
		}
		reqs = append(reqs, poolRequest(pt.queue[pt.head], start))
		pt.queue[pt.head] = poolJob{}
		pt.head++
	}
	if pt.head == len(pt.queue) {
		pt.queue = pt.queue[:0]
		pt.head = 0
	} else if pt.head > 1024 && pt.head > len(pt.queue)/2 {
		n := copy(pt.queue, pt.queue[pt.head:])
		clear(pt.queue[n:])
		pt.queue = pt.queue[:n]
		pt.head = 0
	}
	return reqs
}

// poolBatchSink takes the completions of one batch probe type during one
// Run: it frees their slots, stamps and delivers the results (unless Run is
// ending) and then releases their keys, so that results of one target reach
// the sink in order.
type poolBatchSink struct {
	p      *Pool
	pt     *poolType
	runCtx context.Context
	probes *sync.WaitGroup
}

// ProbesDone implements probe.BatchSink.
func (bs *poolBatchSink) ProbesDone(cs []probe.Completion) {
	p, pt := bs.p, bs.pt
	n := len(cs)
	if n == 0 {
		return
	}
	p.global.releaseN(n)
	pt.sem.releaseN(n)
	pt.inFlight.Add(int64(-n))
	pt.inFlightGauge.Sub(float64(n))
	if bs.runCtx.Err() == nil {
		rp := resultPool.Get().(*[]probe.Result)
		results := slices.Grow((*rp)[:0], n)[:n]
		for i := range cs {
			r := &results[i]
			*r = cs[i].Result
			req := &cs[i].Request
			if r.Duration == 0 {
				r.Duration = time.Since(req.Start)
			}
			r.Key, r.KeyHash, r.Target, r.Due, r.Start = req.Target.Key(), req.Target.KeyHash(), req.Target, req.Due, req.Start
		}
		if p.batchSink != nil {
			p.batchSink(results)
		} else {
			for i := range results {
				p.sink(results[i])
			}
		}
		clear(results)
		*rp = results[:0]
		resultPool.Put(rp)
	}
	pt.mu.Lock()
	for i := range cs {
		pt.active.remove(cs[i].Request.Target)
	}
	pt.mu.Unlock()
	bs.probes.Add(-n)
}

func (p *Pool) acquire(ctx context.Context, pt *poolType) bool {
	if !pt.waitToken(ctx) {
		return false
	}
	if err := pt.sem.acquire(ctx); err != nil {
		return false
	}
	if err := p.global.acquire(ctx); err != nil {
		pt.sem.release()
		return false
	}
	return true
}

// waitToken waits for a start token. Unlike rate.Limiter.Wait it restarts
// the wait when SetLimits changes the rate, so lifting a low rate takes effect
// at once instead of after the already reserved delay.
func (pt *poolType) waitToken(ctx context.Context) bool {
	for {
		if pt.limiter.Allow() {
			return true // fast path, no allocation
		}
		pt.limitsMu.Lock()
		changed := pt.limitsChanged
		pt.limitsMu.Unlock()
		r := pt.limiter.Reserve()
		if !r.OK() {
			// Cannot happen: the burst is at least one.
			return false
		}
		timer := time.NewTimer(r.Delay())
		select {
		case <-ctx.Done():
			timer.Stop()
			r.Cancel()
			return false
		case <-changed:
			timer.Stop()
			r.Cancel()
		case <-timer.C:
			return true
		}
	}
}

// probe runs one job under its timeout and delivers the result.
func (p *Pool) probe(runCtx context.Context, pt *poolType, job poolJob, start time.Time, probes *sync.WaitGroup) {
	defer probes.Done()
	timeout := job.t.Timeout
	if timeout <= 0 {
		// Config validation rejects this; fall back to the interval so a
		// probe can never hold its slot forever.
		timeout = job.t.Interval
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(runCtx, timeout)
	} else {
		ctx, cancel = context.WithCancel(runCtx)
	}
	r := pt.prober.Probe(ctx, job.t)
	cancel()
	if r.Duration == 0 {
		r.Duration = time.Since(start)
	}

	p.global.release()
	pt.sem.release()
	pt.inFlight.Add(-1)
	pt.inFlightGauge.Dec()

	if runCtx.Err() == nil {
		r.Key, r.KeyHash, r.Target = job.t.Key(), job.t.KeyHash(), job.t
		r.Due = job.due
		r.Start = start
		p.sink(r)
	}
	// Release the key only after the sink so that results of one target
	// reach the sink in order.
	pt.done(job.t)
}

// next pops the oldest queued job, waiting until there is one or ctx ends.
func (pt *poolType) next(ctx context.Context) (poolJob, bool) {
	for {
		pt.mu.Lock()
		if pt.head < len(pt.queue) {
			job := pt.queue[pt.head]
			pt.queue[pt.head] = poolJob{}
			pt.head++
			if pt.head == len(pt.queue) {
				// Empty: rewind so the backing array is reused.
				pt.queue = pt.queue[:0]
				pt.head = 0
			} else if pt.head > 1024 && pt.head > len(pt.queue)/2 {
				n := copy(pt.queue, pt.queue[pt.head:])
				clear(pt.queue[n:])
				pt.queue = pt.queue[:n]
				pt.head = 0
			}
			pt.mu.Unlock()
			return job, true
		}
		pt.mu.Unlock()
		select {
		case <-ctx.Done():
			return poolJob{}, false
		case <-pt.notify:
		}
	}
}

// done forgets t so that it can be submitted again.
func (pt *poolType) done(t *config.Target) {
	pt.mu.Lock()
	pt.active.remove(t)
	pt.mu.Unlock()
}

// drop discards the queued jobs when Run ends.
func (pt *poolType) drop() {
	pt.mu.Lock()
	n := len(pt.queue) - pt.head
	for _, job := range pt.queue[pt.head:] {
		pt.active.remove(job.t)
	}
	clear(pt.queue)
	pt.queue = pt.queue[:0]
	pt.head = 0
	pt.mu.Unlock()
	pt.waiting.Add(int64(-n))
	pt.waitingGauge.Sub(float64(n))
}

// SetLimits applies the concurrency and rate limits of g (on reload) without
// dropping queued or running work. Lowering a concurrency limit lets running
// probes finish; no new probe starts until the count is below the new limit.
func (p *Pool) SetLimits(g config.Global) {
	p.global.setLimit(poolConcurrency(g.Concurrency))
	for name, pt := range p.types {
		l := g.Limits.For(name)
		pt.limiter.SetLimit(poolRate(l))
		pt.limiter.SetBurst(poolBurst(l))
		pt.sem.setLimit(poolConcurrency(l.Concurrency))
		pt.limitsMu.Lock()
		close(pt.limitsChanged)
		pt.limitsChanged = make(chan struct{})
		pt.limitsMu.Unlock()
	}
}

// Reconcile takes the configured target list at start and after a reload:
// it deletes the fleet_probes_skipped_total series of every (set, probe
// type) pair no target has any more, and creates those of new pairs at 0,
// so that the first skip is an increase rate() sees. Queued and running
// probes are left alone; the scheduler stops submitting removed targets.
func (p *Pool) Reconcile(targets []*config.Target) {
	pairs := make(map[[2]string]struct{})
	for _, t := range targets {
		pairs[[2]string{t.Set, t.Probe}] = struct{}{}
	}
	p.forget(func(set, probe string) bool { _, ok := pairs[[2]string{set, probe}]; return ok })
	p.seriesMu.Lock()
	defer p.seriesMu.Unlock()
	for pair := range pairs {
		if _, ok := p.series[pair]; !ok {
			p.series[pair] = struct{}{}
			p.skipped.WithLabelValues(pair[0], pair[1])
		}
	}
}

// forget deletes the fleet_probes_skipped_total series of every (set, probe
// type) pair for which keep returns false.
func (p *Pool) forget(keep func(set, probe string) bool) {
	p.seriesMu.Lock()
	defer p.seriesMu.Unlock()
	for s := range p.series {
		if keep(s[0], s[1]) {
			continue
		}
		p.skipped.DeleteLabelValues(s[0], s[1])
		delete(p.series, s)
	}
}

// Stats returns the current in-flight and waiting counts per probe type and
// the total number of skipped submissions.
func (p *Pool) Stats() PoolStats {
	s := PoolStats{
		InFlight: make(map[string]int, len(p.types)),
		Waiting:  make(map[string]int, len(p.types)),
		Skipped:  p.skippedTotal.Load(),
	}
	for name, pt := range p.types {
		s.InFlight[name] = int(pt.inFlight.Load())
		s.Waiting[name] = int(pt.waiting.Load())
	}
	return s
}

// poolSem is a counting semaphore whose size can change at run time.
type poolSem struct {
	// mu guards limit, used and wake.
	mu    sync.Mutex
	limit int
	used  int
	// wake is closed (and cleared) when a slot frees or the limit changes;
	// it is created only when someone has to wait.
	wake chan struct{}
}

func (s *poolSem) acquire(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.used < s.limit {
			s.used++
			s.mu.Unlock()
			return nil
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		w := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
		}
	}
}

func (s *poolSem) release() {
	s.releaseN(1)
}

// tryAcquire takes a slot if one is free, without waiting.
func (s *poolSem) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used < s.limit {
		s.used++
		return true
	}
	return false
}

// releaseN frees n slots.
func (s *poolSem) releaseN(n int) {
	s.mu.Lock()
	s.used -= n
	s.broadcast()
	s.mu.Unlock()
}

func (s *poolSem) setLimit(n int) {
	s.mu.Lock()
	s.limit = n
	s.broadcast()
	s.mu.Unlock()
}

// broadcast wakes every waiter. Callers hold s.mu.
func (s *poolSem) broadcast() {
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}
