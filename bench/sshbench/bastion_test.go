package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

// TestWithSSH checks that the bastion modes' targets get their own ssh
// block and leave the direct targets as they were.
func TestWithSSH(t *testing.T) {
	orig := &config.SSHProbe{User: "fleet", Port: 42203}
	targets := []*config.Target{
		{Set: "fleetsim", Host: "127.30.0.1", Name: "127.30.0.1", SSH: orig},
		{Set: "fleetsim", Host: "127.30.0.2", Name: "127.30.0.2", SSH: orig},
	}
	hop := config.ProxyJump{Host: "127.31.0.1:2222", User: "root", Connections: 2}
	got := withSSH(targets, func(p *config.SSHProbe) {
		p.ProxyJump = []config.ProxyJump{hop}
		p.ReuseConnections = true
	})
	if len(got) != len(targets) {
		t.Fatalf("%d targets, want %d", len(got), len(targets))
	}
	for i, g := range got {
		if g == targets[i] || g.Name != targets[i].Name {
			t.Errorf("target %d: %p %q, want a copy of %p %q", i, g, g.Name, targets[i], targets[i].Name)
		}
		if len(g.SSH.ProxyJump) != 1 || g.SSH.ProxyJump[0].Host != hop.Host || !g.SSH.ReuseConnections || g.SSH.User != "fleet" {
			t.Errorf("target %d: ssh block %+v, want the original with the hop and reuse", i, g.SSH)
		}
		if g.SSH != got[0].SSH {
			t.Errorf("target %d has an ssh block of its own; all share one, as the targets of one set do", i)
		}
	}
	if len(orig.ProxyJump) != 0 || orig.ReuseConnections {
		t.Errorf("the direct targets' ssh block changed: %+v", orig)
	}
}

func TestFailuresOfPasses(t *testing.T) {
	tests := []struct {
		name string
		runs []passResult
		want string
	}{
		{"none", []passResult{{n: 10, ok: 10}, {n: 10, ok: 10}}, "0"},
		{"summed by reason", []passResult{
			{n: 10, ok: 8, fail: 2, reasons: map[string]int{"timeout": 1, "bastion": 1}},
			{n: 10, ok: 9, fail: 1, reasons: map[string]int{"timeout": 1}},
		}, "3 (bastion:1 timeout:2)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failuresOfPasses(tc.runs); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListedHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("127.30.0.1\n127.30.0.2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{"127.30.0.2": true, "127.30.0.3": false, "pdsh@bench": false, "": false} {
		if got := listedHost(host, path); got != want {
			t.Errorf("listedHost(%q) = %v, want %v", host, got, want)
		}
	}
}
