package probe

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// ErrDNS marks a failed name resolution. Every error returned by
// Resolver.Lookup for a name that did not resolve wraps it, so probers and
// ReasonFor can recognise it with errors.Is.
var ErrDNS = errors.New("dns resolution failed")

// ReasonFor maps a network error to the fixed Reason set. It understands
// ErrDNS, the syscall errnos a connect or socket call returns (also when
// wrapped in *net.OpError or *os.SyscallError), context deadlines and net
// timeouts. A nil error maps to ReasonNone; anything it does not recognise
// maps to ReasonError.
func ReasonFor(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrDNS), errors.As(err, &dnsErr):
		return ReasonDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT),
		netIsTimeout(err):
		return ReasonTimeout
	case errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EADDRNOTAVAIL):
		return ReasonUnreachable
	case errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EACCES),
		errors.Is(err, os.ErrPermission):
		return ReasonPermission
	default:
		return ReasonError
	}
}

// netIsTimeout reports whether any error in err's chain says it is a timeout
// through the net.Error interface.
func netIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
