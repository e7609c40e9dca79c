package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
	sshprober "github.com/fleet-exporter/fleet_exporter/prober/ssh"
)

// TestServeDevice generates and serves a fleet of simulated network
// devices and probes it with the SSH prober in exec and shell mode, with
// the config gen wrote: healthy hosts agree on the show version hash,
// drifted ones report another version, auth_reject hosts fail with auth.
func TestServeDevice(t *testing.T) {
	fo := testFleet(12)
	fo.Fractions[classAuthReject] = 0.1
	fo.Drift = 0.3
	fleet := seedWith(t, &fo, func(fleet []simHost) bool {
		n := map[bool]int{}
		for _, h := range fleet {
			if h.Class == classHealthy {
				n[h.Drift]++
			}
		}
		return n[false] >= 2 && n[true] >= 1
	})
	_, pub, _ := clientFiles(t, genDir(t, fo))
	stop := startServe(t, &serveOptions{
		Fleet: fo, AuthorizedKey: pub, Device: true, DeviceUser: "fleet", DevicePassword: defaultDevicePassword,
	})
	defer stop()

	for _, mode := range []string{config.SSHModeExec, config.SSHModeShell} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			err := gen(&genOptions{
				Fleet: fo, Out: dir, SetName: "sim", User: "fleet",
				Interval: 30 * time.Second, Timeout: 10 * time.Second, Concurrency: 8, SSHConcurrency: 8,
				MaxOutputBytes: 1 << 16,
				Commands:       []genCommand{{Name: "version", Run: "show version"}},
				Device:         true, DevicePassword: defaultDevicePassword, Mode: mode, IgnoreLines: []string{"uptime is"},
			})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(filepath.Join(dir, configName))
			if err != nil {
				t.Fatal(err)
			}
			targets, _, err := cfg.Targets()
			if err != nil {
				t.Fatal(err)
			}
			p := sshprober.NewProber(dns.New(dns.Options{}), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
			defer p.Close()
			hashes := map[bool]map[string]bool{false: {}, true: {}}
			for i, tg := range targets {
				h := fleet[i]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res := p.Probe(ctx, tg)
				cancel()
				switch h.Class {
				case classHealthy:
					if !res.Success {
						t.Fatalf("%s: success=false reason=%q err=%v", h.Addr, res.Reason, res.Err)
					}
					hashes[h.Drift][res.SSH.Commands[0].SHA256] = true
				case classAuthReject:
					if res.Reason != probe.ReasonAuth {
						t.Errorf("%s: reason %q, want auth", h.Addr, res.Reason)
					}
				}
			}
			if len(hashes[false]) != 1 || len(hashes[true]) != 1 {
				t.Fatalf("hashes of plain hosts %v, of drifted hosts %v: want one each", hashes[false], hashes[true])
			}
			for h := range hashes[false] {
				if hashes[true][h] {
					t.Errorf("drifted hosts share the hash %s", h)
				}
			}
		})
	}
}
