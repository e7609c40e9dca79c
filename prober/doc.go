// Package prober assembles the probers of every probe type, the ICMP socket
// mode and the DNS cache they share. The probers themselves live in the
// sub-packages icmp, tcp and ssh; each implements probe.Prober and knows
// nothing of the scheduler, the pool or the store.
package prober
