package collector

import (
	"cmp"
	"maps"
	"slices"
	"sync"
)

// HashExported reports whether the command's fleet_ssh_command_output_hash
// series is exported. fleet_ssh_command_output_distinct_hashes and the
// status pages count exactly those series, so that they agree with the
// PromQL that counts them.
func (c *CommandState) HashExported() bool { return c.Ran && c.OutputRead }

// driftRow is one series of fleet_ssh_command_output_distinct_hashes.
type driftRow struct {
	set, command string
	distinct     int
}

// driftCache computes the drift rows of a snapshot once: overlapping
// scrapes share a snapshot, and every writer of one scrape reads them.
type driftCache struct {
	once sync.Once
	rows []driftRow
}

// driftRows returns the (set, command) pairs for which some host of the set
// exports an output hash, with the number of distinct hashes, sorted by
// command and then set (the registry's order: label names command < set).
func (s *Snapshot) driftRows() []driftRow {
	if s.drift == nil {
		// Not a snapshot of the store: nothing to share it with.
		return computeDrift(s.Targets)
	}
	s.drift.once.Do(func() { s.drift.rows = computeDrift(s.Targets) })
	return s.drift.rows
}

// computeDrift counts the distinct exported hashes per (set, command).
func computeDrift(ts []TargetState) []driftRow {
	var rows []driftRow
	type key struct{ set, command string }
	hashes := map[key]map[uint64]struct{}{}
	for i := range ts {
		t := &ts[i]
		if t.SSH == nil || !t.HasResult {
			continue
		}
		for j := range t.SSH.Commands {
			c := &t.SSH.Commands[j]
			if !c.HashExported() {
				continue
			}
			k := key{t.Target.Set, c.Name}
			m := hashes[k]
			if m == nil {
				m = map[uint64]struct{}{}
				hashes[k] = m
			}
			m[c.Hash] = struct{}{}
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(hashes), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.command, b.command), cmp.Compare(a.set, b.set))
	}) {
		rows = append(rows, driftRow{set: k.set, command: k.command, distinct: len(hashes[k])})
	}
	return rows
}
