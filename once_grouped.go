package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/hostrange"
)

// onceCheck is one thing --once.output=grouped reports on: a probe of a
// set (a tcp probe per port), or one SSH command of a set.
type onceCheck struct {
	set, probe string
	port       int
	command    string
}

// onceGroup is one distinct result of a check and the hosts that share
// it. Its JSON field names are part of the documented interface (README,
// "One-shot mode").
type onceGroup struct {
	Set     string `json:"set"`
	Probe   string `json:"probe"`
	Port    int    `json:"port,omitempty"`
	Command string `json:"command,omitempty"`
	Run     string `json:"run,omitempty"`
	// Hosts is the hosts folded into ranges, Count how many they are.
	Hosts   string `json:"hosts"`
	Count   int    `json:"count"`
	Success bool   `json:"success"`
	Reason  string `json:"reason,omitempty"`
	// Ran is false for hosts whose SSH probe failed before the command.
	Ran             bool   `json:"ran,omitempty"`
	ExitStatus      *int   `json:"exit_status,omitempty"`
	StderrFirstLine string `json:"stderr_first_line,omitempty"`
	OutputHash      uint64 `json:"output_hash,omitempty"`
	OutputBytes     int64  `json:"output_bytes,omitempty"`
	// Output is the start of the command's stdout (at most 64 KiB; the
	// hash covers all of it); OutputTruncated says it is cut.
	Output          string `json:"output,omitempty"`
	OutputTruncated bool   `json:"output_truncated,omitempty"`

	hosts []string
}

// groupKey tells the distinct results of one check apart.
type groupKey struct {
	success bool
	reason  string
	ran     bool
	exit    int
	hash    uint64
	bytes   int64
	stderr  string
}

// groupOnce folds rows (already in natural order) into groups per check:
// checks in the order they first appear, the largest group of each first,
// ties in the natural order of their first host.
func groupOnce(rows []onceResult) []onceGroup {
	var (
		checks []onceCheck
		groups = map[onceCheck][]*onceGroup{}
		index  = map[onceCheck]map[groupKey]*onceGroup{}
	)
	add := func(c onceCheck, k groupKey, r *onceResult, fill func(*onceGroup)) {
		m, ok := index[c]
		if !ok {
			m = map[groupKey]*onceGroup{}
			index[c] = m
			checks = append(checks, c)
		}
		g := m[k]
		if g == nil {
			g = &onceGroup{Set: c.set, Probe: c.probe, Port: c.port, Command: c.command, Success: k.success, Reason: k.reason}
			fill(g)
			m[k] = g
			groups[c] = append(groups[c], g)
		}
		g.hosts = append(g.hosts, r.Host)
	}
	for i := range rows {
		r := &rows[i]
		if r.Probe != config.ProbeSSH || len(r.commands) == 0 {
			c := onceCheck{set: r.Set, probe: r.Probe, port: r.Port}
			add(c, groupKey{success: r.Success, reason: r.Reason}, r, func(*onceGroup) {})
			continue
		}
		for j, name := range r.commands {
			c := onceCheck{set: r.Set, probe: r.Probe, command: name}
			var cmd *onceCommand
			if r.SSH != nil && j < len(r.SSH.Commands) && r.SSH.Commands[j].Ran {
				cmd = &r.SSH.Commands[j]
			}
			if cmd == nil {
				// The SSH probe failed before this command: the probe's
				// reason says why.
				add(c, groupKey{reason: r.Reason}, r, func(g *onceGroup) { g.Run = r.runs[j] })
				continue
			}
			k := groupKey{success: cmd.Reason == "", reason: cmd.Reason, ran: true, exit: cmd.ExitStatus, hash: cmd.OutputHash, bytes: cmd.OutputBytes, stderr: cmd.StderrFirstLine}
			add(c, k, r, func(g *onceGroup) {
				exit := cmd.ExitStatus
				g.Run, g.Ran, g.ExitStatus = r.runs[j], true, &exit
				g.StderrFirstLine, g.OutputHash, g.OutputBytes = cmd.StderrFirstLine, cmd.OutputHash, cmd.OutputBytes
				g.Output = string(cmd.output)
				g.OutputTruncated = int64(len(cmd.output)) < cmd.OutputBytes
			})
		}
	}
	var out []onceGroup
	for _, c := range checks {
		gs := groups[c]
		slices.SortStableFunc(gs, func(a, b *onceGroup) int {
			return cmp.Or(cmp.Compare(len(b.hosts), len(a.hosts)), hostrange.Compare(a.hosts[0], b.hosts[0]))
		})
		for _, g := range gs {
			g.Count = len(g.hosts)
			g.Hosts = hostrange.Compress(g.hosts)
			out = append(out, *g)
		}
	}
	return out
}

// printGrouped writes groups as dshbak -c does, one block per distinct
// result under a line naming the check:
//
//	== cli ssh uname (uname -r)
//	----------------
//	127.0.1.[1-2,4] (3 hosts)
//	----------------
//	6.1.0
func printGrouped(w io.Writer, groups []onceGroup) {
	const rule = "----------------\n"
	var b bytes.Buffer
	var last onceCheck
	for i := range groups {
		g := &groups[i]
		c := onceCheck{set: g.Set, probe: g.Probe, port: g.Port, command: g.Command}
		if i == 0 || c != last {
			if i > 0 {
				b.WriteByte('\n')
			}
			b.WriteString("== " + g.Set + " " + g.Probe)
			if g.Port != 0 {
				b.WriteString(":" + strconv.Itoa(g.Port))
			}
			if g.Command != "" {
				b.WriteString(" " + g.Command + " (" + g.Run + ")")
			}
			b.WriteByte('\n')
			last = c
		}
		noun := "hosts"
		if g.Count == 1 {
			noun = "host"
		}
		fmt.Fprintf(&b, "%s%s (%d %s)\n%s", rule, g.Hosts, g.Count, noun, rule)
		if g.Output != "" {
			b.WriteString(g.Output)
			if !strings.HasSuffix(g.Output, "\n") {
				b.WriteByte('\n')
			}
			if g.OutputTruncated {
				fmt.Fprintf(&b, "[output cut at %d of %d bytes]\n", len(g.Output), g.OutputBytes)
			}
		}
		switch {
		case g.Success && g.Command == "":
			b.WriteString("ok\n")
		case g.Success:
			if g.Output == "" {
				b.WriteString("(no output)\n")
			}
		case !g.Ran && g.Command != "":
			b.WriteString("FAIL not run: ssh " + g.Reason + "\n")
		case g.Command != "":
			b.WriteString("FAIL " + commandStatus(onceCommand{Reason: g.Reason, ExitStatus: *g.ExitStatus, StderrFirstLine: g.StderrFirstLine}) + "\n")
		default:
			b.WriteString("FAIL " + g.Reason + "\n")
		}
	}
	_, _ = w.Write(b.Bytes())
}
