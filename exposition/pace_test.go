package exposition

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakePacer returns a pacer over a fake clock whose sleeps advance it by
// step, and whose waiting reports busy for the first busy calls.
func fakePacer(budget, step time.Duration, busy int) (*pacer, *int) {
	now := time.Unix(0, 0)
	calls := 0
	p := newPacer(budget)
	p.now = func() time.Time { return now }
	p.sleep = func(time.Duration) { now = now.Add(step) }
	p.waiting = func() bool {
		calls++
		return calls <= busy
	}
	return p, &calls
}

func TestPacerSleepsWhileOthersWait(t *testing.T) {
	p, calls := fakePacer(time.Second, time.Millisecond, 3)
	p.yield()
	if p.paused != 3*time.Millisecond {
		t.Errorf("paused %v while three checks saw waiting goroutines, want 3ms", p.paused)
	}
	if *calls != 4 {
		t.Errorf("waiting checked %d times, want 4 (three busy, one idle)", *calls)
	}
	p.yield()
	if p.paused != 3*time.Millisecond {
		t.Errorf("paused %v in all after an idle yield, want still 3ms", p.paused)
	}
}

func TestPacerStopsAtItsBudget(t *testing.T) {
	// Always busy: the pacer pauses until the budget is spent, and then
	// never again, so the scrape ends.
	p, _ := fakePacer(10*time.Millisecond, 3*time.Millisecond, 1<<30)
	for range 100 {
		p.yield()
	}
	if p.paused != 12*time.Millisecond {
		t.Errorf("paused %v with a 10ms budget and 3ms sleeps, want 12ms (the sleep that crossed it ends it)", p.paused)
	}
}

func TestPacerWithoutBudgetNeverPauses(t *testing.T) {
	p, calls := fakePacer(0, time.Millisecond, 1<<30)
	p.yield()
	if p.paused != 0 || *calls != 0 {
		t.Errorf("zero budget: paused %v after %d checks, want neither", p.paused, *calls)
	}
}

func TestPauseBudget(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 5 * time.Second},
		{"4", 2 * time.Second},
		{"10", 5 * time.Second},
		{"0.5", 250 * time.Millisecond},
		{"1e300", 5 * time.Second},
		{"0", 5 * time.Second},
		{"-3", 5 * time.Second},
		{"NaN", 5 * time.Second},
		{"soon", 5 * time.Second},
	} {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.header != "" {
			r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", tc.header)
		}
		if got := pauseBudget(r, 5*time.Second); got != tc.want {
			t.Errorf("timeout header %q: budget %v, want %v", tc.header, got, tc.want)
		}
	}
}

// spin keeps n goroutines busy on the CPU until the returned function is
// called (or 10 s pass) and returns once they have stopped.
func spin(n int) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

func TestRunnableGoroutinesSeesCPUWaiters(t *testing.T) {
	// More spinning goroutines than processors: some wait for a CPU at
	// every instant.
	stop := spin(runtime.GOMAXPROCS(0) + 2)
	defer stop()
	waiting := runnableGoroutines()
	deadline := time.Now().Add(5 * time.Second)
	for !waiting() {
		if time.Now().After(deadline) {
			t.Fatal("no runnable goroutine seen in 5 s with more spinning goroutines than processors")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestScrapePausesForBusyCPUs(t *testing.T) {
	store, _ := handlerStore(100, true)
	for _, tc := range []struct {
		name     string
		maxPause time.Duration
		header   string
		paused   bool
	}{
		{"paused", 200 * time.Millisecond, "", true},
		{"pausing off", 0, "", false},
		{"timeout header", 200 * time.Millisecond, "0.000000001", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := selfRegistry()
			h, err := NewHandler(Options{Registry: reg, Snapshot: store.Snapshot, MaxPause: tc.maxPause})
			if err != nil {
				t.Fatal(err)
			}
			stop := spin(runtime.GOMAXPROCS(0) + 2)
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("X-Prometheus-Scrape-Timeout-Seconds", tc.header)
			}
			rec := scrape(t, h, hdr, "")
			stop()
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			paused := testutil.ToFloat64(h.paused)
			if got := paused > 0; got != tc.paused {
				t.Errorf("fleet_scrape_paused_seconds_total = %g, want paused %v", paused, tc.paused)
			}
			if paused > tc.maxPause.Seconds()+0.1 {
				t.Errorf("paused %gs, beyond the %v budget", paused, tc.maxPause)
			}
		})
	}
}
