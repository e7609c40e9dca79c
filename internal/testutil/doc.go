// Package testutil is fleet_exporter's test kit: free loopback ports and
// throwaway listeners, builders for *config.Target with test defaults, a
// clock moved by hand, a Buffer safe for concurrent writes, Series to find
// gathered series by label, Start for components with a Run(ctx) error
// method, the goleak TestMain every package's tests run under, and
// test-scoped starts of the in-process SSH server (internal/sshserver). The
// OpenSSH launcher is internal/sshdtest.
//
// Only tests import it.
package testutil
