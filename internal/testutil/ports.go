package testutil

import (
	"net"
	"strconv"
	"testing"
)

// FreePort returns a TCP port on the loopback address ip (e.g. "127.0.0.1",
// "127.0.0.3" or "::1") that was free a moment ago: the kernel picks it for
// a listener that is closed again at once. Another process may take it
// before the caller binds it, so a caller that can hand over a listener
// instead (TCPListener) should.
func FreePort(tb testing.TB, ip string) int {
	tb.Helper()
	ln := listen(tb, ip, 0)
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		tb.Fatalf("testutil: close listener: %v", err)
	}
	return port
}

// TCPListener listens on a free TCP port of the loopback address ip, accepts
// and closes every connection until the test ends, and returns the port.
func TCPListener(tb testing.TB, ip string) int {
	tb.Helper()
	return TCPListenerOn(tb, ip, 0)
}

// TCPListenerOn is TCPListener on a given port of ip (0 picks a free one),
// e.g. to serve one port on many loopback addresses.
func TCPListenerOn(tb testing.TB, ip string, port int) int {
	tb.Helper()
	ln := listen(tb, ip, port)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// listen opens a TCP listener on port (0: a free one) of ip, which must be
// a loopback address: tests never listen anywhere else.
func listen(tb testing.TB, ip string, port int) net.Listener {
	tb.Helper()
	if a := net.ParseIP(ip); a == nil || !a.IsLoopback() {
		tb.Fatalf("testutil: %q is not a loopback IP address", ip)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("testutil: listen on %s: %v", addr, err)
	}
	return ln
}
