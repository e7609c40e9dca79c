package main

import (
	"context"
	"log/slog"
	"slices"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// reloadNamesShown is how many host names a reload summary lists per change.
const reloadNamesShown = 5

// setChanges counts what a reload does to one host set.
type setChanges struct {
	added, removed, changed, kept int
	// The first few hosts of each kind, in config order.
	addedHosts, removedHosts, changedHosts []string
}

// diffTargets compares two target lists by key (set, host, probe) and
// fingerprint, per set.
func diffTargets(old, cur []*config.Target) map[string]*setChanges {
	per := make(map[string]*setChanges)
	get := func(set string) *setChanges {
		c := per[set]
		if c == nil {
			c = &setChanges{}
			per[set] = c
		}
		return c
	}
	note := func(list *[]string, host string) {
		if len(*list) < reloadNamesShown && !slices.Contains(*list, host) {
			*list = append(*list, host)
		}
	}
	before := make(map[config.Key]string, len(old))
	for _, t := range old {
		before[t.Key()] = t.Fingerprint
	}
	seen := make(map[config.Key]bool, len(cur))
	for _, t := range cur {
		k := t.Key()
		seen[k] = true
		c := get(t.Set)
		fp, ok := before[k]
		switch {
		case !ok:
			c.added++
			note(&c.addedHosts, t.Host)
		case fp != t.Fingerprint:
			c.changed++
			note(&c.changedHosts, t.Host)
		default:
			c.kept++
		}
	}
	for _, t := range old {
		if !seen[t.Key()] {
			c := get(t.Set)
			c.removed++
			note(&c.removedHosts, t.Host)
		}
	}
	return per
}

// logTargetChanges logs, per set, how many targets a reload adds, removes
// and changes, with the first few host names, so that a mass removal (a
// file cut off by a partial write still parses) is visible at once. A set
// that lost every target is logged at warning level.
func logTargetChanges(logger *slog.Logger, old, cur []*config.Target) {
	per := diffTargets(old, cur)
	sets := make([]string, 0, len(per))
	for s := range per {
		sets = append(sets, s)
	}
	slices.Sort(sets)
	for _, s := range sets {
		c := per[s]
		if c.added == 0 && c.removed == 0 && c.changed == 0 {
			continue
		}
		level := slog.LevelInfo
		if c.kept == 0 && c.added == 0 && c.changed == 0 {
			level = slog.LevelWarn
		}
		logger.Log(context.Background(), level, "Reload changes targets",
			"set", s, "added", c.added, "removed", c.removed, "changed", c.changed, "unchanged", c.kept,
			"added_hosts", c.addedHosts, "removed_hosts", c.removedHosts, "changed_hosts", c.changedHosts)
	}
}
