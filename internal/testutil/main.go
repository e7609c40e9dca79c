package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// Main runs the package's tests and fails the run when a goroutine outlives
// them. Packages call it from TestMain; opts add goleak options such as
// goleak.IgnoreTopFunction or goleak.Cleanup.
func Main(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
}
