package status

import (
	"cmp"
	"slices"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/internal/hostrange"
)

// HostKeysView is the landing page's host key section: recent changes and
// keys that several hosts present.
type HostKeysView struct {
	// Observed counts the SSH targets with an observed host key; the
	// section is left out while it is 0.
	Observed int
	// Changes lists the targets whose fingerprint changed within
	// keyChangeWindow, the most recent first, at most maxKeyChangesListed;
	// MoreChanges counts those left off.
	Changes     []KeyChange
	MoreChanges int
	// Groups lists the fingerprints that more than one host presents, most
	// hosts first, at most maxKeyGroupsListed; MoreGroups counts those
	// left off.
	Groups     []KeyGroup
	MoreGroups int
}

// KeyChange is one target whose host key changed.
type KeyChange struct {
	Set, Host string
	// Old and New are the fingerprints before and after the change, Type
	// the new key's type.
	Old, New, Type string
	Changed        time.Time
}

// KeyGroup is the hosts presenting one host key fingerprint.
type KeyGroup struct {
	Fingerprint string
	// Count is the number of distinct host names, as
	// fleet_ssh_host_key_shared_hosts counts them.
	Count int
	// Ranges lists those names folded into ranges (hostrange.Compress),
	// Sets the sets they are in, in natural order.
	Ranges string
	Sets   []string
}

// keyChangeWindow is how far back the landing page lists host key changes;
// maxKeyChangesListed and maxKeyGroupsListed bound its lists, since a
// re-imaged rack changes or shares every key at once.
const (
	keyChangeWindow     = 24 * time.Hour
	maxKeyChangesListed = 100
	maxKeyGroupsListed  = 50
)

// buildHostKeys returns the host key section for snap at now, in one pass
// over the targets.
func buildHostKeys(snap *collector.Snapshot, now time.Time) HostKeysView {
	var v HostKeysView
	type group struct {
		names, sets map[string]struct{}
	}
	groups := map[string]*group{}
	for i := range snap.Targets {
		t := &snap.Targets[i]
		if !t.HostKeyExported() {
			continue
		}
		v.Observed++
		k := t.SSH.HostKey
		if !k.Changed.IsZero() && now.Sub(k.Changed) <= keyChangeWindow {
			v.Changes = append(v.Changes, KeyChange{
				Set: t.Target.Set, Host: t.Target.Host, Old: k.Previous, New: k.FingerprintSHA256, Type: k.Type, Changed: k.Changed,
			})
		}
		g := groups[k.FingerprintSHA256]
		if g == nil {
			g = &group{names: map[string]struct{}{}, sets: map[string]struct{}{}}
			groups[k.FingerprintSHA256] = g
		}
		// The host name without port, as the collector counts hosts.
		g.names[cmp.Or(t.Target.Name, t.Target.Host)] = struct{}{}
		g.sets[t.Target.Set] = struct{}{}
	}
	slices.SortFunc(v.Changes, func(a, b KeyChange) int {
		return cmp.Or(b.Changed.Compare(a.Changed), hostrange.Compare(a.Set, b.Set), hostrange.Compare(a.Host, b.Host))
	})
	if len(v.Changes) > maxKeyChangesListed {
		v.MoreChanges = len(v.Changes) - maxKeyChangesListed
		v.Changes = v.Changes[:maxKeyChangesListed]
	}
	for fp, g := range groups {
		// The metric's count, so page and metric cannot disagree.
		n := snap.HostKeySharedHosts(fp)
		if n < 2 {
			continue
		}
		sets := sortedKeys(g.sets)
		hostrange.Sort(sets)
		v.Groups = append(v.Groups, KeyGroup{
			Fingerprint: fp, Count: n, Ranges: hostrange.Compress(sortedKeys(g.names)), Sets: sets,
		})
	}
	slices.SortFunc(v.Groups, func(a, b KeyGroup) int {
		return cmp.Or(b.Count-a.Count, cmp.Compare(a.Fingerprint, b.Fingerprint))
	})
	if len(v.Groups) > maxKeyGroupsListed {
		v.MoreGroups = len(v.Groups) - maxKeyGroupsListed
		v.Groups = v.Groups[:maxKeyGroupsListed]
	}
	return v
}
