package schedule

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Scheduler decides when each target is due and hands it to a submit
// function at that instant. It keeps every target in one min-heap keyed by
// the next due time and runs a single goroutine with a single timer, so an
// idle fleet costs no goroutines and each firing or reschedule is O(log n).
//
// Each target's phase inside its interval is derived from a hash of its set,
// host and probe, and due times are aligned to the Unix epoch. The same
// target is therefore due at the same instants across restarts, reloads and
// replicas, and a fleet sharing one interval is spread evenly over it instead
// of bursting at start-up.
//
// A target whose retry interval is shorter than its interval leaves its
// phase while it fails: Observe, fed with every result, moves its next run
// to one retry interval after each failure, so an outage is confirmed in a
// few retry intervals rather than a few intervals. The first success puts it
// back on its hashed slots.
type Scheduler struct {
	submit func(t *config.Target, due time.Time) bool
	logger *slog.Logger
	// submitBatch, when set (SetSubmitBatch), takes each pass at once
	// instead of submit.
	submitBatch func([]Due)
	// dues is the pass handed to submitBatch, reused between passes.
	dues []Due
	// wake has capacity one; Update signals it so the loop re-reads the heap.
	wake chan struct{}
	// coalesce is the shortest time between two passes of the loop over
	// due targets (SetCoalesce); zero fires every target at its instant.
	coalesce time.Duration

	// mu guards heap, byKey, gen and batch.
	mu    sync.Mutex
	heap  schedHeap
	byKey config.KeyIndex[*schedEntry]
	// gen is bumped by every Update; entries not stamped with the current
	// generation were not in the latest target list and are removed.
	gen uint64
	// batch is reused between loop passes to hand due entries to submit
	// without holding mu and without allocating.
	batch []schedFire
}

// schedEntry is one scheduled target.
type schedEntry struct {
	t        *config.Target
	due      int64 // Unix nanoseconds
	offset   int64 // phase inside the interval, in [0, interval)
	interval int64 // nanoseconds, > 0
	// retry is the time from a failure to the next run, in (0, interval);
	// zero when the target has no retry interval shorter than its interval.
	retry int64
	// failedAt is when the last result, a failure, was observed (Unix
	// nanoseconds); zero after a success.
	failedAt int64
	idx      int // position in the heap
	gen      uint64
}

// schedEntryKey is the key an entry is scheduled under.
func schedEntryKey(e *schedEntry) config.Key { return e.t.Key() }

// schedFire is one target to submit, copied out of the heap under the lock.
type schedFire struct {
	t   *config.Target
	due int64
}

// NewScheduler returns a Scheduler that calls submit for every target when it
// is due. submit must not block; it returns false when it skipped the target,
// which the scheduler ignores (the pool counts skips). A nil logger discards
// log output. NewScheduler starts no goroutine; call Update and Run.
func NewScheduler(submit func(t *config.Target, due time.Time) bool, logger *slog.Logger) *Scheduler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{
		submit: submit,
		logger: logger,
		wake:   make(chan struct{}, 1),
	}
}

// Reconcile takes the configured target list: Targets whose Key and
// Fingerprint are unchanged keep their next due time; changed targets are
// re-timed from their new interval (one still failing is retried one new
// retry interval after its failure, if that comes before its slot); new
// targets are added at their next slot; targets missing from the list are
// dropped. Targets with a
// non-positive interval are ignored with a warning, and of duplicate keys
// only the first is kept. Reconcile is safe to call from any goroutine, before
// and while Run runs.
func (s *Scheduler) Reconcile(targets []*config.Target) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	s.gen++
	gen := s.gen
	kept := 0
	for _, t := range targets {
		if t.Interval <= 0 {
			s.logger.Warn("Ignoring target with non-positive interval",
				"set", t.Set, "host", t.Host, "probe", t.Probe, "interval", t.Interval)
			continue
		}
		k, h := t.Key(), t.KeyHash()
		e, ok := s.byKey.Get(h, k, schedEntryKey)
		switch {
		case ok && e.gen == gen:
			s.logger.Warn("Ignoring duplicate target", "set", t.Set, "host", t.Host, "probe", t.Probe)
			continue
		case ok && e.t.Fingerprint == t.Fingerprint && e.interval == int64(t.Interval) && e.retry == schedRetry(t):
			// Unchanged: keep the due time, but point at the new snapshot
			// so the old config can be collected.
			e.t = t
		case ok:
			e.t = t
			e.interval = int64(t.Interval)
			e.retry = schedRetry(t)
			e.offset = schedOffset(k, e.interval)
			e.due = schedNextSlot(now, e.offset, e.interval)
			if e.failedAt != 0 && e.retry > 0 {
				e.due = min(e.due, max(now, e.failedAt+e.retry))
			}
			s.heap.fix(e.idx)
		default:
			e = &schedEntry{t: t, interval: int64(t.Interval), retry: schedRetry(t)}
			e.offset = schedOffset(k, e.interval)
			e.due = schedNextSlot(now, e.offset, e.interval)
			s.byKey.Put(h, k, e, schedEntryKey)
			s.heap.push(e)
		}
		e.gen = gen
		kept++
	}
	if kept < s.byKey.Len() {
		s.byKey.Range(func(e *schedEntry) bool {
			if e.gen != gen {
				s.heap.remove(e.idx)
				s.byKey.Delete(e.t.KeyHash(), e.t.Key(), schedEntryKey)
			}
			return true
		})
	}
	s.mu.Unlock()

	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// schedRetry returns t's retry interval in nanoseconds, or zero when it is
// unset or not shorter than the interval: retrying on the interval is what
// the regular slots do anyway, without leaving the phase.
func schedRetry(t *config.Target) int64 {
	if r := int64(t.RetryInterval); r > 0 && r < int64(t.Interval) {
		return r
	}
	return 0
}

// Observe takes the result of a probe of a scheduled target; the daemon
// calls it from the pool's result sink. After a failure of a target with a
// retry interval, the target's next run is moved to one retry interval from
// now, unless its regular slot comes first. A success ends the retries:
// every run, retries included, is followed by the target's next hashed slot,
// so nothing has to move. Results of targets no longer scheduled are
// ignored. Observe never blocks on Run and is safe to call from any
// goroutine.
func (s *Scheduler) Observe(r probe.Result) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	e := s.entryOf(&r)
	if e == nil {
		s.mu.Unlock()
		return
	}
	if r.Success {
		e.failedAt = 0
		s.mu.Unlock()
		return
	}
	e.failedAt = now
	moved := false
	if e.retry > 0 && now+e.retry < e.due {
		e.due = now + e.retry
		s.heap.fix(e.idx)
		moved = true
	}
	s.mu.Unlock()
	if moved {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// entryOf returns the entry r is for, or nil: the one whose target r's is
// without comparing keys when r carries its target. Callers hold s.mu.
func (s *Scheduler) entryOf(r *probe.Result) *schedEntry {
	h := r.Hash()
	if r.Target != nil {
		if e, ok := s.byKey.Peek(h); ok && e.t == r.Target {
			return e
		}
	}
	e, _ := s.byKey.Get(h, r.Key, schedEntryKey)
	return e
}

// ObserveBatch is Observe for many results, under one lock.
func (s *Scheduler) ObserveBatch(rs []probe.Result) {
	now := time.Now().UnixNano()
	moved := false
	s.mu.Lock()
	for i := range rs {
		r := &rs[i]
		e := s.entryOf(r)
		if e == nil {
			continue
		}
		if r.Success {
			e.failedAt = 0
			continue
		}
		e.failedAt = now
		if e.retry > 0 && now+e.retry < e.due {
			e.due = now + e.retry
			s.heap.fix(e.idx)
			moved = true
		}
	}
	s.mu.Unlock()
	if moved {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// SetCoalesce makes the loop wait at least d between two passes over the
// due targets, so that a large fleet is submitted in batches (every target
// due in the last d at once) instead of one wake-up per target: a target
// then starts up to d after its instant. Call it before Run.
func (s *Scheduler) SetCoalesce(d time.Duration) {
	s.coalesce = max(d, 0)
}

// SetSubmitBatch makes the scheduler hand every pass over due targets to
// fn at once instead of calling submit per target (Pool.SubmitBatch). fn
// must not block or keep the slice. Call it before Run.
func (s *Scheduler) SetSubmitBatch(fn func([]Due)) {
	s.submitBatch = fn
}

// Len returns the number of scheduled targets.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap)
}

// Run submits targets as they fall due until ctx ends, then returns nil.
// Targets that were due while the loop was behind (e.g. before Run started)
// are submitted once, late, and continue on their regular slots; missed
// slots are never fired as a backlog.
func (s *Scheduler) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		next, ok := s.fire(time.Now().UnixNano())
		if ok {
			timer.Reset(max(time.Duration(next-time.Now().UnixNano()), s.coalesce))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// fire submits every entry due at or before now and returns the earliest
// remaining due time, if any.
func (s *Scheduler) fire(now int64) (next int64, ok bool) {
	s.mu.Lock()
	batch := s.collect(now, s.batch[:0])
	s.batch = nil // owned by this pass until handed back below
	s.mu.Unlock()

	if s.submitBatch != nil {
		dues := s.dues[:0]
		for _, f := range batch {
			dues = append(dues, Due{Target: f.t, At: time.Unix(0, f.due)})
		}
		if len(dues) > 0 {
			s.submitBatch(dues)
		}
		clear(dues)
		s.dues = dues[:0]
	} else {
		for _, f := range batch {
			s.submit(f.t, time.Unix(0, f.due))
		}
	}
	clear(batch) // drop target pointers so old configs can be collected

	s.mu.Lock()
	defer s.mu.Unlock()
	s.batch = batch
	if len(s.heap) == 0 {
		return 0, false
	}
	return s.heap[0].due, true
}

// collect pops every entry due at or before now into batch and moves it to
// its next slot. Callers hold s.mu.
func (s *Scheduler) collect(now int64, batch []schedFire) []schedFire {
	for len(s.heap) > 0 && s.heap[0].due <= now {
		e := s.heap[0].e
		due := e.due
		if now-due >= e.interval {
			// The loop fell behind by at least one interval: fire once for
			// the latest slot that has passed instead of a backlog.
			due += (now - due) / e.interval * e.interval
		}
		batch = append(batch, schedFire{t: e.t, due: due})
		// The next hashed slot: due plus one interval for a regular run,
		// the slot following a retry, which is off the phase.
		e.due = schedNextSlot(due+1, e.offset, e.interval)
		s.heap.fix(0)
	}
	return batch
}

// schedOffset returns the phase of key inside interval: FNV-1a 64 of
// set "\x00" host "\x00" probe, followed for a TCP port by "\x00" and the
// port's two bytes, modulo interval. The ports of one host so get their own
// phases, and keys without a port keep the phase they always had. It is
// computed inline because hash/fnv would allocate per call.
func schedOffset(k config.Key, interval int64) int64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= prime64
		}
	}
	add(k.Set)
	h *= prime64 // the "\x00" separator: h ^= 0 is a no-op
	add(k.Host)
	h *= prime64
	add(k.Probe)
	if k.Port != 0 {
		h *= prime64
		for _, b := range [2]byte{byte(k.Port >> 8), byte(k.Port)} {
			h ^= uint64(b)
			h *= prime64
		}
	}
	return int64(h % uint64(interval))
}

// schedNextSlot returns the first instant >= now (Unix nanoseconds) whose
// distance from offset is a whole number of intervals.
func schedNextSlot(now, offset, interval int64) int64 {
	r := (now - offset) % interval
	if r < 0 {
		r += interval
	}
	if r == 0 {
		return now
	}
	return now + interval - r
}

// schedHeap is a 4-ary min-heap of entries ordered by due time. It is
// hand-written rather than container/heap to avoid interface calls on the
// hot path, and it keeps each entry's due time next to its pointer, so that
// sifting through a heap of 100,000 entries compares without loading the
// entries themselves; every operation keeps schedEntry.idx up to date.
// Four children per node halve the levels a sift crosses (and so the
// entries whose idx it writes, a cache miss each) against a binary heap;
// sifting moves a hole instead of swapping, so each level costs one write.
// Callers change an entry's due only through push or before fix.
type schedHeap []schedItem

// schedItem is one heap slot: the entry and a copy of its due time.
type schedItem struct {
	due int64
	e   *schedEntry
}

func (h *schedHeap) push(e *schedEntry) {
	e.idx = len(*h)
	*h = append(*h, schedItem{due: e.due, e: e})
	h.up(e.idx)
}

func (h *schedHeap) remove(i int) {
	old := *h
	n := len(old) - 1
	old[i].e.idx = -1
	if i != n {
		old[i] = old[n]
		old[i].e.idx = i
	}
	old[n] = schedItem{}
	*h = old[:n]
	if i != n {
		h.fix(i)
	}
}

// fix restores the heap after the due time of the entry at i changed.
func (h schedHeap) fix(i int) {
	h[i].due = h[i].e.due
	if !h.down(i) {
		h.up(i)
	}
}

// schedArity is the heap's number of children per node.
const schedArity = 4

// up moves the entry at j towards the root.
func (h schedHeap) up(j int) {
	it := h[j]
	for j > 0 {
		i := (j - 1) / schedArity
		if h[i].due <= it.due {
			break
		}
		h[j] = h[i]
		h[j].e.idx = j
		j = i
	}
	h[j] = it
	it.e.idx = j
}

// down sifts the entry at i0 towards the leaves and reports whether it moved.
func (h schedHeap) down(i0 int) bool {
	n := len(h)
	it := h[i0]
	i := i0
	for {
		c := schedArity*i + 1
		if c >= n || c < 0 {
			break
		}
		m := c
		for k := c + 1; k < c+schedArity && k < n; k++ {
			if h[k].due < h[m].due {
				m = k
			}
		}
		if h[m].due >= it.due {
			break
		}
		h[i] = h[m]
		h[i].e.idx = i
		i = m
	}
	h[i] = it
	it.e.idx = i
	return i > i0
}
