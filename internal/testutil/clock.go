package testutil

import (
	"sync"
	"time"
)

// Clock is a clock a test moves by hand, for code that reads the time
// through a func() time.Time field (pass Clock.Now) rather than the system
// clock, e.g. cache expiry or reconnect backoff checked step by step. It is
// safe for concurrent use.
type Clock struct {
	// mu guards now.
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until it is advanced.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward when d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
