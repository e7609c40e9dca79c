package status

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/internal/hostrange"
)

// HostView is one host of a set with the last result of each of its probes.
type HostView struct {
	Set, Host string
	State     HostState
	Probes    []ProbeView
}

// ProbeView is what the store knows about one probe of a host.
type ProbeView struct {
	Probe string
	// Port is the probed port of a tcp probe, empty for the others.
	Port    string
	Pending bool
	Success bool
	Reason  string
	// Since is when the current failure streak began; zero while the
	// probe succeeds.
	Since time.Time
	// LastRun and LastSuccess are the end times of the last probe and of
	// the last successful one (zero before the first).
	LastRun, LastSuccess time.Time
	Duration             time.Duration
	Failures             int
	// Addr is the address the last probe went to; empty when the name did
	// not resolve.
	Addr string
	ICMP collector.ICMPState
	SSH  *collector.SSHState
}

// Name is how pages show the probe: its type, with the port for tcp
// ("tcp:443"), so the ports of a host with several are told apart.
func (p ProbeView) Name() string {
	if p.Port == "" {
		return p.Probe
	}
	return p.Probe + ":" + p.Port
}

// Failing returns the probes of h whose last result failed.
func (h *HostView) Failing() []ProbeView {
	var out []ProbeView
	for _, p := range h.Probes {
		if !p.Pending && !p.Success {
			out = append(out, p)
		}
	}
	return out
}

// FailingSince returns when the oldest failure streak of h's probes began.
func (h *HostView) FailingSince() time.Time {
	var since time.Time
	for _, p := range h.Failing() {
		if since.IsZero() || (!p.Since.IsZero() && p.Since.Before(since)) {
			since = p.Since
		}
	}
	return since
}

// MaxFailures returns the longest run of consecutive failures among h's
// probes.
func (h *HostView) MaxFailures() int {
	n := 0
	for _, p := range h.Failing() {
		n = max(n, p.Failures)
	}
	return n
}

// Counts holds the number of hosts per state. Every page counts the same
// way: each host is in exactly one state (see HostState), so up, degraded,
// down and pending add up to the hosts; fleet_host_up is 1 for the up and
// the degraded ones.
type Counts struct {
	Hosts                       int
	Up, Degraded, Down, Pending int
}

// add counts one host in state st.
func (c *Counts) add(st HostState) {
	c.Hosts++
	switch st {
	case StateUp:
		c.Up++
	case StateDegraded:
		c.Degraded++
	case StateDown:
		c.Down++
	default:
		c.Pending++
	}
}

// Of returns the count of state st.
func (c Counts) Of(st HostState) int {
	switch st {
	case StateUp:
		return c.Up
	case StateDegraded:
		return c.Degraded
	case StateDown:
		return c.Down
	default:
		return c.Pending
	}
}

// plus returns the sum of c and o.
func (c Counts) plus(o Counts) Counts {
	return Counts{c.Hosts + o.Hosts, c.Up + o.Up, c.Degraded + o.Degraded, c.Down + o.Down, c.Pending + o.Pending}
}

// SetView is one host set: its hosts in natural order and their counts.
type SetView struct {
	Name   string
	Counts Counts
	Hosts  []HostView
}

// Failing returns the hosts that are down or degraded, the most recent
// failure streak first, then in natural order.
func (s *SetView) Failing() []HostView {
	var out []HostView
	for _, h := range s.Hosts {
		if h.State == StateDown || h.State == StateDegraded {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b HostView) int { return b.FailingSince().Compare(a.FailingSince()) })
	return out
}

// buildSets groups a snapshot (sorted by set, host, probe) into set views,
// sets and hosts in natural order.
func buildSets(snap *collector.Snapshot) []*SetView {
	var sets []*SetView
	var cur *SetView
	var host *HostView
	for i := range snap.Targets {
		ts := &snap.Targets[i]
		t := ts.Target
		if cur == nil || cur.Name != t.Set {
			cur = &SetView{Name: t.Set}
			sets = append(sets, cur)
			host = nil
		}
		if host == nil || host.Host != t.Host {
			cur.Hosts = append(cur.Hosts, HostView{Set: t.Set, Host: t.Host})
			host = &cur.Hosts[len(cur.Hosts)-1]
		}
		pv := ProbeView{
			Probe: t.Probe, Port: t.PortLabel(), Pending: !ts.HasResult, Success: ts.Success, Reason: string(ts.Reason),
			Since: ts.FailingSince, LastRun: ts.LastRun, LastSuccess: ts.LastSuccess,
			Duration: ts.Duration, Failures: ts.ConsecutiveFailures, ICMP: ts.ICMP, SSH: ts.SSH,
		}
		if ts.Addr.IsValid() {
			pv.Addr = ts.Addr.String()
		}
		host.Probes = append(host.Probes, pv)
	}
	for _, s := range sets {
		for i := range s.Hosts {
			s.Hosts[i].State = hostState(s.Hosts[i].Probes)
			s.Counts.add(s.Hosts[i].State)
		}
		slices.SortFunc(s.Hosts, func(a, b HostView) int { return hostrange.Compare(a.Host, b.Host) })
	}
	// Sets in natural order too: rack2 before rack10.
	slices.SortStableFunc(sets, func(a, b *SetView) int { return hostrange.Compare(a.Name, b.Name) })
	return sets
}

func hostState(probes []ProbeView) HostState {
	var ok, failed int
	for _, p := range probes {
		switch {
		case p.Pending:
		case p.Success:
			ok++
		default:
			failed++
		}
	}
	switch {
	case ok > 0 && failed > 0:
		return StateDegraded
	case ok > 0:
		return StateUp
	case failed > 0:
		return StateDown
	default:
		return StatePending
	}
}

// matchHost reports whether host contains the lower-cased query q, ignoring
// case; the empty query matches every host.
func matchHost(host, q string) bool {
	return q == "" || strings.Contains(strings.ToLower(host), q)
}

// DriftView is the distribution of one command's output across a set.
type DriftView struct {
	Command string
	// Hosts counts the hosts that export a hash for the command.
	Hosts int
	// Groups holds one entry per distinct hash, most hosts first.
	Groups []HashGroup
	// Majority is true when the first group holds more than half of
	// Hosts: the baseline the drift alert compares with.
	Majority bool
	// Distinct is the number of distinct hashes; Groups lists at most
	// maxGroupsListed of them, and MoreHosts counts the hosts of those
	// left off.
	Distinct  int
	MoreHosts int
}

// HashGroup is the hosts of a set that report the same output hash.
type HashGroup struct {
	// Hash is the value of fleet_ssh_command_output_hash, in decimal as
	// Prometheus shows it.
	Hash  string
	Count int
	// Ranges lists the hosts folded into ranges (hostrange.Compress).
	Ranges string
	// Changes holds each host with the time its output last changed, in
	// natural order; empty for the majority group, which can be large.
	Changes []HostChange
	// Latest is the most recent change among the group's hosts.
	Latest time.Time
}

// HostChange is one host of a hash group.
type HostChange struct {
	Host    string
	Changed time.Time
}

// maxChangesListed bounds the per-host change list of a minority group, and
// maxGroupsListed the hashes listed per command: a command whose output
// differs on every host (a host name) would otherwise list every host.
const (
	maxChangesListed = 200
	maxGroupsListed  = 50
)

// buildDrift returns the drift view of every command of set s, by command
// name.
func buildDrift(s *SetView) []DriftView {
	type member struct {
		host    string
		changed time.Time
	}
	byCmd := map[string]map[uint64][]member{}
	for _, h := range s.Hosts {
		for _, p := range h.Probes {
			if p.SSH == nil || p.Pending {
				continue
			}
			for i := range p.SSH.Commands {
				c := &p.SSH.Commands[i]
				if !c.HashExported() {
					continue
				}
				m := byCmd[c.Name]
				if m == nil {
					m = map[uint64][]member{}
					byCmd[c.Name] = m
				}
				m[c.Hash] = append(m[c.Hash], member{h.Host, c.HashChanged})
			}
		}
	}
	var out []DriftView
	for _, name := range sortedKeys(byCmd) {
		dv := DriftView{Command: name}
		for hash, members := range byCmd[name] {
			g := HashGroup{Hash: strconv.FormatUint(hash, 10), Count: len(members)}
			hosts := make([]string, len(members))
			for i, m := range members {
				hosts[i] = m.host
				if m.changed.After(g.Latest) {
					g.Latest = m.changed
				}
			}
			g.Ranges = hostrange.Compress(hosts)
			for _, m := range members {
				g.Changes = append(g.Changes, HostChange{m.host, m.changed})
			}
			slices.SortFunc(g.Changes, func(a, b HostChange) int { return hostrange.Compare(a.Host, b.Host) })
			dv.Hosts += len(members)
			dv.Groups = append(dv.Groups, g)
		}
		slices.SortFunc(dv.Groups, func(a, b HashGroup) int { return cmp.Or(b.Count-a.Count, cmp.Compare(a.Hash, b.Hash)) })
		dv.Majority = dv.Groups[0].Count*2 > dv.Hosts
		dv.Distinct = len(dv.Groups)
		if len(dv.Groups) > maxGroupsListed {
			for _, g := range dv.Groups[maxGroupsListed:] {
				dv.MoreHosts += g.Count
			}
			dv.Groups = dv.Groups[:maxGroupsListed]
		}
		for i := range dv.Groups {
			if i == 0 && dv.Majority {
				dv.Groups[i].Changes = nil
				continue
			}
			if len(dv.Groups[i].Changes) > maxChangesListed {
				dv.Groups[i].Changes = dv.Groups[i].Changes[:maxChangesListed]
			}
		}
		out = append(out, dv)
	}
	return out
}

// Drifted reports whether the view has more than one hash.
func (d *DriftView) Drifted() bool { return d.Distinct > 1 }

// GroupOf returns the index of the group holding hash, or -1.
func (d *DriftView) GroupOf(hash string) int {
	return slices.IndexFunc(d.Groups, func(g HashGroup) bool { return g.Hash == hash })
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
