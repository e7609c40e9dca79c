package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

func TestPermissionLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var p permissionLog
	res := func(set, host, probeType string) probe.Result {
		return probe.Result{Key: config.Key{Set: set, Host: host, Probe: probeType}, Reason: probe.ReasonPermission, Err: errors.Join(syscall.EPERM)}
	}
	p.log(logger, res("web", "h1", config.ProbeTCP))
	p.log(logger, res("web", "h2", config.ProbeTCP)) // same set and probe: quiet
	p.log(logger, res("web", "h1", config.ProbeICMP))
	p.log(logger, res("db", "h1", config.ProbeTCP))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (one per set and probe type):\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "egress firewall") || !strings.Contains(l, "likely_causes=") {
			t.Errorf("line does not warn about an egress firewall: %s", l)
		}
	}
	if !strings.Contains(lines[1], "ping_group_range") || !strings.Contains(lines[1], "CAP_NET_RAW") {
		t.Errorf("the ICMP line does not name the socket privileges: %s", lines[1])
	}
	if strings.Contains(lines[0], "ping_group_range") {
		t.Errorf("the TCP line names ICMP privileges: %s", lines[0])
	}
}
