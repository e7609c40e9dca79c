package testutil

import (
	"context"
	"testing"
)

// Start calls run (a component's Run method) on a goroutine of its own and
// returns stop, which cancels run's context, waits for run to return and
// fails the test unless it returned nil. Under testing/synctest the
// goroutine belongs to the caller's bubble. The context derives from the
// test's, so a test that never calls stop still ends run at cleanup.
func Start(tb testing.TB, run func(context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(tb.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return func() {
		tb.Helper()
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run() = %v, want nil", err)
		}
	}
}
