package exposition

import (
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// TestSharedSnapshot checks that overlapping scrapes share one snapshot,
// that a scrape with none other in flight takes a fresh one, and that a
// snapshot held too long (a stuck reader) is not handed out again.
func TestSharedSnapshot(t *testing.T) {
	now := time.Unix(1000, 0)
	taken := 0
	s := &sharedSnapshot{
		take: func() *collector.Snapshot { taken++; return &collector.Snapshot{} },
		now:  func() time.Time { return now },
	}
	a := s.acquire()
	b := s.acquire()
	if a != b || taken != 1 {
		t.Fatalf("overlapping scrapes: same=%v, %d snapshots taken, want one shared", a == b, taken)
	}
	s.release()
	s.release()
	c := s.acquire()
	if c == a || taken != 2 {
		t.Fatalf("a scrape after the others ended reused the old snapshot (taken %d)", taken)
	}
	// c is held by a stuck reader; past the share age a new scrape gets a
	// fresh copy, and the one after it shares that one.
	now = now.Add(snapshotShareAge + time.Millisecond)
	d := s.acquire()
	e := s.acquire()
	if d == c || d != e || taken != 3 {
		t.Fatalf("stale shared snapshot: fresh=%v shared=%v taken=%d", d != c, d == e, taken)
	}
	s.release()
	s.release()
	s.release()
	if s.users != 0 || s.cur != nil {
		t.Fatalf("after every release: users=%d cur=%v", s.users, s.cur)
	}
}
