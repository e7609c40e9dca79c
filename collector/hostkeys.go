package collector

import (
	"cmp"
	"sync"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// HostKeyExported reports whether the target's host key series are
// exported: once a handshake presented a key, through failed probes and
// probes on a reused connection, until the target leaves the
// configuration. fleet_ssh_host_key_shared_hosts and the status pages count
// exactly those targets.
func (t *TargetState) HostKeyExported() bool {
	return t.HasResult && t.SSH != nil && t.SSH.HostKey != nil
}

// hostKeyCache computes the shared host counts of a snapshot once:
// overlapping scrapes share a snapshot, and every writer of one scrape reads
// them.
type hostKeyCache struct {
	once   sync.Once
	shared map[string]int
}

// hostKeyShares returns, per fingerprint, the number of distinct host names
// (config.Target.Name) whose exported host key has it.
func (s *Snapshot) hostKeyShares() map[string]int {
	if s.hostKeys == nil {
		// Not a snapshot of the store: nothing to share it with.
		return computeHostKeyShares(s.Targets)
	}
	s.hostKeys.once.Do(func() { s.hostKeys.shared = computeHostKeyShares(s.Targets) })
	return s.hostKeys.shared
}

// HostKeySharedHosts returns how many distinct configured host names
// present the host key fingerprint: the value of
// fleet_ssh_host_key_shared_hosts for a target with that key, 0 when no
// exported key has it. A host name in several sets or on several ports
// counts once.
func (s *Snapshot) HostKeySharedHosts(fingerprint string) int {
	return s.hostKeyShares()[fingerprint]
}

// computeHostKeyShares counts distinct host names per fingerprint in one
// pass over the targets.
func computeHostKeyShares(ts []TargetState) map[string]int {
	type pair struct{ fingerprint, name string }
	seen := map[pair]struct{}{}
	shared := map[string]int{}
	for i := range ts {
		t := &ts[i]
		if !t.HostKeyExported() {
			continue
		}
		p := pair{t.SSH.HostKey.FingerprintSHA256, hostName(t.Target)}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		shared[p.fingerprint]++
	}
	return shared
}

// hostName is the name a host key belongs to: the target's DNS name or
// address without port, so that one machine in two sets or on two ports is
// one host; the host entry for a target built without one.
func hostName(t *config.Target) string { return cmp.Or(t.Name, t.Host) }
