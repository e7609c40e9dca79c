package dnstest

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/internal/dns"
)

// ErrNoDNS is what the offline resolver's DNS dialer returns.
var ErrNoDNS = errors.New("test: DNS traffic is not allowed")

// Offline returns a Resolver that answers from /etc/hosts but whose
// nameserver dialer always fails with ErrNoDNS, so a name not in the hosts
// file fails as with a dead nameserver.
func Offline(t testing.TB) *dns.Resolver {
	t.Helper()
	return dns.New(dns.Options{
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, ErrNoDNS
		},
	})
}
