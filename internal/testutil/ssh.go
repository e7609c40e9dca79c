package testutil

import (
	"net"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
)

// StartSSHServer starts an in-process SSH test server (see
// sshserver.StartTest) and closes it when the test ends.
func StartSSHServer(tb testing.TB, opts sshserver.TestOptions) *sshserver.TestServer {
	tb.Helper()
	s, err := sshserver.StartTest(opts)
	if err != nil {
		tb.Fatalf("testutil: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// StartRawServer starts a listener on a free port of 127.0.0.1 whose
// connections go to handle instead of SSH (see sshserver.StartRaw,
// sshserver.Greet) and closes it when the test ends.
func StartRawServer(tb testing.TB, handle func(nc net.Conn)) *sshserver.RawServer {
	tb.Helper()
	r, err := sshserver.StartRaw("", handle)
	if err != nil {
		tb.Fatalf("testutil: %v", err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}
