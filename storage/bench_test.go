package storage

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

const benchTargets = 100_000

// benchFleet returns 100,000 targets of probe type kind (SSH targets run
// three commands) in 100 sets, and a store holding a result for each, a
// tenth of them failing, with the probed address and, for SSH, the host
// key every file of a real fleet holds.
func benchFleet(kind string) ([]*config.Target, *collector.Store) {
	targets := make([]*config.Target, benchTargets)
	for i := range targets {
		set, host := fmt.Sprintf("set%03d", i%100), fmt.Sprintf("host%06d.dc1.example.com", i)
		if kind == config.ProbeSSH {
			targets[i] = testutil.SSHTarget(set, host, testutil.WithCommands("uname -a", "df -h /", "systemctl is-system-running"), testutil.WithFingerprint("b"))
		} else {
			targets[i] = testutil.ICMPTarget(set, host, testutil.WithFingerprint("b"))
		}
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	now := time.Now()
	for i, t := range targets {
		ok := i%10 != 0
		r := probe.Result{
			Key: t.Key(), Start: now.Add(-time.Duration(i) * time.Millisecond), Duration: 3 * time.Millisecond, Success: ok,
			Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		}
		if !ok {
			r.Reason = probe.ReasonTimeout
		}
		if kind == config.ProbeSSH {
			fp := sha256.Sum256(fmt.Appendf(nil, "%d", i))
			r.SSH = &probe.SSHResult{
				NewConnection: true, Connect: time.Millisecond, Handshake: 2 * time.Millisecond, Auth: time.Millisecond,
				HostKey: &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + base64.RawStdEncoding.EncodeToString(fp[:])},
			}
			for j, c := range t.SSH.Commands {
				r.SSH.Commands = append(r.SSH.Commands, probe.CommandResult{
					Name: c.Name, Ran: true, Duration: time.Millisecond, Hash: uint64(i)<<20 | uint64(j) | 1<<63, Bytes: 200,
				})
			}
		} else {
			r.ICMP = &probe.ICMPResult{Sent: 1, Received: 1, RTT: 200 * time.Microsecond}
		}
		s.Update(r)
	}
	return targets, s
}

// BenchmarkSave is one whole periodic snapshot of 100,000 targets: export
// from the store, encoding, write, fsync, rename, fsync of the directory.
func BenchmarkSave(b *testing.B) {
	for _, kind := range []string{config.ProbeICMP, config.ProbeSSH} {
		b.Run(kind, func(b *testing.B) {
			_, store := benchFleet(kind)
			dir := b.TempDir()
			snap, err := New(dir, time.Minute, store, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := snap.Save(false); err != nil {
					b.Fatal(err)
				}
			}
			info, err := os.Stat(filepath.Join(dir, FileName))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(info.Size()), "file-bytes")
		})
	}
}

// BenchmarkRestore is the start-up side: read, decode and import the file
// of 100,000 targets into a store that already holds the same configuration.
func BenchmarkRestore(b *testing.B) {
	for _, kind := range []string{config.ProbeICMP, config.ProbeSSH} {
		b.Run(kind, func(b *testing.B) {
			targets, store := benchFleet(kind)
			dir := b.TempDir()
			snap, err := New(dir, time.Minute, store, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := snap.Save(false); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// The configured store is what the daemon has before
				// it restores; building it is not part of the restore.
				b.StopTimer()
				fresh := collector.NewStore()
				fresh.Reconcile(targets)
				restore, err := New(dir, time.Minute, fresh, slog.New(slog.DiscardHandler), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := restore.Restore(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
