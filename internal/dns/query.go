package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
)

// errServer is the error of a nameserver that answered with a failure code.
var errServer = errors.New("nameserver failure")

// query asks the nameservers of resolv.conf for qtype records of name, as
// the system resolver would: every name of the search list in turn (a
// negative answer moves on to the next), each server in turn for each
// attempt, over UDP with a retry over TCP when the answer was truncated.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) outcome {
	conf, err := r.resolvConf.get(r.now())
	if err != nil {
		return outcome{err: fmt.Errorf("resolv.conf: %w", err)}
	}
	timeout := time.Duration(max(conf.Timeout, 1)) * time.Second
	var lastErr error
	for _, fqdn := range conf.NameList(name) {
		o, done := r.queryName(ctx, conf, fqdn, qtype, timeout)
		if done {
			return o
		}
		if o.err != nil {
			lastErr = o.err
		}
	}
	if lastErr != nil {
		// Some name of the list could not be asked: that it does not
		// exist is not known.
		return outcome{err: lastErr}
	}
	return outcome{negative: true}
}

// queryName asks for one fully qualified name. done is false when the
// answer was negative (or every server failed), so the next name of the
// search list is tried.
func (r *Resolver) queryName(ctx context.Context, conf *mdns.ClientConfig, fqdn string, qtype uint16, timeout time.Duration) (o outcome, done bool) {
	m := new(mdns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	var lastErr error
	for range max(conf.Attempts, 1) {
		for _, server := range conf.Servers {
			if ctx.Err() != nil {
				return outcome{err: ctx.Err()}, true
			}
			addr := net.JoinHostPort(server, conf.Port)
			resp, err := r.exchangeOne(ctx, "udp", addr, m, timeout)
			if err == nil && resp.Truncated {
				resp, err = r.exchangeOne(ctx, "tcp", addr, m, timeout)
			}
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", addr, err)
				continue
			}
			switch resp.Rcode {
			case mdns.RcodeSuccess:
				o := answer(resp, qtype)
				if len(o.addrs) == 0 {
					return outcome{negative: true}, false
				}
				return o, true
			case mdns.RcodeNameError:
				return outcome{negative: true}, false
			default:
				lastErr = fmt.Errorf("%s: %w: %s", addr, errServer, mdns.RcodeToString[resp.Rcode])
			}
		}
	}
	return outcome{err: lastErr}, false
}

// exchangeOne sends m to one server over network and waits for the answer
// at most timeout.
func (r *Resolver) exchangeOne(ctx context.Context, network, addr string, m *mdns.Msg, timeout time.Duration) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := r.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	c := &mdns.Client{Net: network, Timeout: timeout}
	resp, _, err := c.ExchangeWithConnContext(ctx, m, &mdns.Conn{Conn: nc})
	if err != nil {
		return nil, err
	}
	if resp.Id != m.Id {
		return nil, fmt.Errorf("%w: answer id %d does not match the query's %d", errServer, resp.Id, m.Id)
	}
	return resp, nil
}

// answer collects the addresses of type qtype from a successful answer and
// the smallest TTL of the answer's records (CNAMEs included: the chain is
// only as fresh as its shortest link).
func answer(resp *mdns.Msg, qtype uint16) outcome {
	var o outcome
	first := true
	for _, rr := range resp.Answer {
		h := rr.Header()
		if ttl := time.Duration(h.Ttl) * time.Second; first || ttl < o.ttl {
			o.ttl, first = ttl, false
		}
		var ip net.IP
		switch v := rr.(type) {
		case *mdns.A:
			if qtype == mdns.TypeA {
				ip = v.A
			}
		case *mdns.AAAA:
			if qtype == mdns.TypeAAAA {
				ip = v.AAAA
			}
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			if qtype == mdns.TypeA {
				a = a.Unmap()
			}
			o.addrs = append(o.addrs, a)
		}
	}
	return o
}
