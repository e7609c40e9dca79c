package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Prober checks that a TCP connection to the target's port can be
// established. It sends nothing: the connection is closed as soon as the
// handshake completes.
type Prober struct {
	res *dns.Resolver
}

// NewProber returns a Prober that resolves names through res.
func NewProber(res *dns.Resolver) *Prober {
	return &Prober{res: res}
}

// Probe resolves the target and connects to it under ctx, which carries the
// timeout. The port is the one in the host entry, else the probe's configured
// port. Duration covers resolution and connect.
func (p *Prober) Probe(ctx context.Context, t *config.Target) probe.Result {
	start := time.Now()
	res := probe.Result{}
	finish := func(err error) probe.Result {
		res.Duration = time.Since(start)
		if err != nil {
			res.Success, res.Reason, res.Err = false, probe.ReasonFor(err), err
		} else {
			res.Success = true
		}
		return res
	}

	port := targetPort(t)
	if port <= 0 || port > 65535 {
		res.Duration = time.Since(start)
		res.Reason, res.Err = probe.ReasonConfig, fmt.Errorf("tcp: no valid port for %s: %d", t.Host, port)
		return res
	}
	addr, err := p.res.Lookup(ctx, t.Name, t.IP)
	if err != nil {
		return finish(err)
	}
	res.Addr = addr
	ap := netip.AddrPortFrom(addr, uint16(port))
	var d net.Dialer
	if src := t.SourceAddress; src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Zone: src.Zone()}
	}
	conn, err := d.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return finish(dialError(ctx, err))
	}
	// A close error after a completed handshake says nothing about
	// reachability, so it does not fail the probe.
	_ = conn.Close()
	return finish(nil)
}

// targetPort returns the port to connect to: the host entry's, else the probe's.
func targetPort(t *config.Target) int {
	if t.Port != 0 {
		return t.Port
	}
	if t.TCP != nil {
		return t.TCP.Port
	}
	return 0
}

// dialError makes sure a dial that failed because ctx's deadline passed
// is recognised as a timeout: DialContext reports it as "i/o timeout" or, on
// some paths, as a bare "operation was canceled".
func dialError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w (%w)", err, ctxErr)
	}
	return err
}
