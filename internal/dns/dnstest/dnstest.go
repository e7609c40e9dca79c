package dnstest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/dns"
)

// ErrNoDNS is what the offline resolver's DNS dialer returns.
var ErrNoDNS = errors.New("test: DNS traffic is not allowed")

// Offline returns a Resolver that uses Go's own resolver with /etc/hosts
// but whose DNS dialer always fails with ErrNoDNS.
func Offline(t testing.TB, ttl time.Duration) *dns.Resolver {
	t.Helper()
	return dns.NewResolverWith(ttl, &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, ErrNoDNS
		},
	})
}
