package storage

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// fleetTargets returns an ICMP, a TCP and an SSH target (two commands).
func fleetTargets() []*config.Target {
	return []*config.Target{
		testutil.ICMPTarget("a", "h1"),
		testutil.TCPTarget("a", "h1:80"),
		testutil.SSHTarget("b", "h2", testutil.WithCommands("uname", "df")),
	}
}

// fill reconciles s with targets and records one result for each, ending
// at end.
func fill(s *collector.Store, targets []*config.Target, end time.Time) {
	s.Reconcile(targets)
	for _, t := range targets {
		r := probe.Result{Key: t.Key(), Start: end.Add(-time.Millisecond), Duration: time.Millisecond, Success: true}
		switch t.Probe {
		case config.ProbeICMP:
			r.ICMP = &probe.ICMPResult{Sent: 1, Received: 1, RTT: time.Microsecond}
		case config.ProbeSSH:
			r.SSH = &probe.SSHResult{NewConnection: true, Connect: 1, Handshake: 2, Auth: 3}
			for i, c := range t.SSH.Commands {
				r.SSH.Commands = append(r.SSH.Commands, probe.CommandResult{Name: c.Name, Ran: true, Hash: uint64(i + 1), Bytes: 10})
			}
		}
		s.Update(r)
	}
}

type env struct {
	dir   string
	store *collector.Store
	snap  *Snapshotter
	reg   *prometheus.Registry
	logs  *bytes.Buffer
}

// newEnv returns a Snapshotter on a fresh store configured with targets,
// keeping dir.
func newEnv(t *testing.T, dir string, targets []*config.Target) *env {
	t.Helper()
	e := &env{dir: dir, store: collector.NewStore(), reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	e.store.Reconcile(targets)
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	snap, err := New(dir, time.Minute, e.store, logger, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.snap = snap
	return e
}

// states returns the store's target states by key.
func states(s *collector.Store) map[config.Key]collector.TargetState {
	m := map[config.Key]collector.TargetState{}
	for _, st := range s.Snapshot().Targets {
		k := st.Target.Key()
		st.Target = nil // the config, which differs between the stores
		m[k] = st
	}
	return m
}

func TestSaveRestore(t *testing.T) {
	dir := t.TempDir()
	targets := fleetTargets()
	first := newEnv(t, dir, targets)
	fill(first.store, targets, created)
	if err := first.snap.Save(true); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if got := promtest.ToFloat64(first.snap.size); got != float64(info.Size()) {
		t.Errorf("fleet_storage_snapshot_bytes = %v, file has %d bytes", got, info.Size())
	}
	if got := promtest.ToFloat64(first.snap.lastSnapshot); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("fleet_storage_last_snapshot_timestamp_seconds = %v, not recent", got)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file mode %v, want 0600", info.Mode().Perm())
	}

	// The next start: a changed config (the TCP target's labels changed,
	// the SSH target is gone, an ICMP target is new).
	changed := []*config.Target{
		targets[0],
		testutil.TCPTarget("a", "h1:80", testutil.WithLabels(map[string]string{"env": "new"})),
		testutil.ICMPTarget("c", "h3"),
	}
	second := newEnv(t, dir, changed)
	if err := second.snap.Restore(); err != nil {
		t.Fatal(err)
	}
	want, got := states(first.store), states(second.store)
	for _, k := range []config.Key{targets[0].Key(), targets[1].Key()} {
		if diff := cmp.Diff(want[k], got[k], ignoreUnexported); diff != "" {
			t.Errorf("%v after restore (-want +got):\n%s", k, diff)
		}
	}
	if _, ok := got[targets[2].Key()]; ok {
		t.Error("a target removed from the config was restored")
	}
	if got[changed[2].Key()].HasResult {
		t.Error("a new target has a result")
	}
	if !strings.Contains(second.logs.String(), "restored=2 dropped=1") {
		t.Errorf("restore log does not count restored and dropped targets:\n%s", second.logs)
	}
	// A clean snapshot is rewritten as unclean at once, so a crash now
	// does not restore its counters twice.
	h, _, err := readFile(t, dir)
	if err != nil || h.Clean {
		t.Errorf("after restoring a clean snapshot the file has clean=%v (err %v), want an unclean one", h.Clean, err)
	}
}

func readFile(t *testing.T, dir string) (Header, *collector.Saved, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return Unmarshal(data)
}

// TestRestoreUncleanResetsCounters: counters of a snapshot taken while
// probes still ran restart at zero; every other field is restored.
func TestRestoreUncleanResetsCounters(t *testing.T) {
	dir := t.TempDir()
	targets := fleetTargets()
	first := newEnv(t, dir, targets)
	fill(first.store, targets, created)
	if err := first.snap.Save(false); err != nil {
		t.Fatal(err)
	}
	second := newEnv(t, dir, targets)
	if err := second.snap.Restore(); err != nil {
		t.Fatal(err)
	}
	want := states(first.store)
	icmp := want[targets[0].Key()]
	icmp.ICMP.PacketsSent, icmp.ICMP.PacketsReceived = 0, 0
	want[targets[0].Key()] = icmp
	if diff := cmp.Diff(want, states(second.store), ignoreUnexported); diff != "" {
		t.Errorf("state after an unclean restore (-want +got):\n%s", diff)
	}
	for _, sp := range second.store.Snapshot().SetProbes {
		if sp.Successes != 0 || sp.Failures != 0 {
			t.Errorf("%s/%s: probe counters %d/%d after an unclean restore, want 0/0", sp.Set, sp.Probe, sp.Successes, sp.Failures)
		}
	}
}

// TestRestoreBadFiles: a start with a missing, truncated, corrupt, future
// or unreadable file works, leaves the store empty, moves the file aside
// and says so in the log.
func TestRestoreBadFiles(t *testing.T) {
	good := Marshal(Header{Created: created}, &collector.Saved{Targets: []collector.SavedTarget{
		{Key: testutil.ICMPTarget("a", "h1").Key(), State: collector.TargetState{HasResult: true, LastRun: created}},
	}})
	future := append([]byte(nil), good...)
	future[9] = Version + 1
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-1] ^= 0xff
	tests := []struct {
		name    string
		content []byte // nil: no file
		dir     bool   // the snapshot path is a directory
		log     string
	}{
		{name: "missing", log: "No state snapshot"},
		{name: "empty", content: []byte{}, log: "shorter than the 32-byte header"},
		{name: "truncated", content: good[:len(good)-5], log: "header says"},
		{name: "corrupt", content: corrupt, log: "checksum mismatch"},
		{name: "future version", content: future, log: "unsupported state snapshot version"},
		{name: "not a file", dir: true, log: "is a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			switch {
			case tc.dir:
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			case tc.content != nil:
				if err := os.WriteFile(path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e := newEnv(t, dir, fleetTargets())
			if err := e.snap.Restore(); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, e.logs)
			}
			for k, st := range states(e.store) {
				if st.HasResult {
					t.Errorf("%v has a result after a bad file", k)
				}
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if tc.content == nil && !tc.dir {
				if len(aside) != 0 {
					t.Errorf("files moved aside without a file: %v", aside)
				}
				return
			}
			if len(aside) != 1 {
				t.Fatalf("moved-aside files: %v, want one", aside)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("snapshot path still exists after moving aside: %v", err)
			}
			if !strings.Contains(e.logs.String(), "moved_to="+aside[0]) {
				t.Errorf("log does not name %s:\n%s", aside[0], e.logs)
			}
			// The next snapshot writes a fresh file in its place.
			if err := e.snap.Save(false); err != nil {
				t.Fatalf("Save after a bad file: %v", err)
			}
		})
	}
}

func TestRestoreRemovesUnfinishedTemps(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, FileName+".tmp-123")
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, filepath.Join(dir), nil)
	if err := e.snap.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("unfinished temporary file still there: %v", err)
	}
}

func TestRestoreCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	e := newEnv(t, dir, fleetTargets())
	if err := e.snap.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := e.snap.Save(false); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newEnv(t, file, nil).snap.Restore(); err == nil {
		t.Error("Restore with a regular file as the directory succeeded")
	}
}

func TestSaveFailureCounted(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, fleetTargets())
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if os.Geteuid() == 0 {
		// root writes anywhere: make the directory vanish instead.
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.snap.Save(false); err == nil {
		t.Fatal("Save into an unwritable directory succeeded")
	}
	if got := promtest.ToFloat64(e.snap.failures); got != 1 {
		t.Errorf("fleet_storage_snapshot_failures_total = %v, want 1", got)
	}
	if got := promtest.ToFloat64(e.snap.lastSnapshot); got != 0 {
		t.Errorf("fleet_storage_last_snapshot_timestamp_seconds = %v after a failure, want 0", got)
	}
}

func TestNewRejects(t *testing.T) {
	s := collector.NewStore()
	if _, err := New("", time.Minute, s, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("New accepted an empty directory")
	}
	if _, err := New(t.TempDir(), 0, s, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("New accepted a zero interval")
	}
	t.Setenv(SlowWriteEnv, "soon")
	if _, err := New(t.TempDir(), time.Minute, s, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Errorf("New accepted %s=soon", SlowWriteEnv)
	}
}

// TestRunWritesEveryInterval runs the loop in virtual time: one snapshot
// per interval, none after the context ends.
func TestRunWritesEveryInterval(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, dir, fleetTargets())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.snap.Run(ctx) }()

		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
			t.Fatalf("snapshot before the first interval: %v", err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		first := promtest.ToFloat64(e.snap.lastSnapshot)
		if first == 0 {
			t.Fatal("no snapshot after one interval")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if second := promtest.ToFloat64(e.snap.lastSnapshot); second-first != 60 {
			t.Errorf("second snapshot %v s after the first, want 60", second-first)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestMetricsLint(t *testing.T) {
	e := newEnv(t, t.TempDir(), nil)
	problems, err := promtest.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Errorf("lint: %+v", problems)
	}
	n, err := promtest.GatherAndCount(e.reg)
	if err != nil || n != 4 {
		t.Errorf("registered %d metrics (err %v), want 4", n, err)
	}
}

// TestHostKeysAcrossRestart: the last host key, its change time and the
// fingerprint before it survive a restart, so the first probe after it is
// no change when the key is the same and is one when the key changed while
// the exporter was down.
func TestHostKeysAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	changed := testutil.SSHTarget("b", "changed")
	steady := testutil.SSHTarget("b", "steady")
	swapped := testutil.SSHTarget("b", "swapped")
	targets := []*config.Target{changed, steady, swapped}
	result := func(tg *config.Target, end time.Time, fp string) probe.Result {
		r := probe.Result{Key: tg.Key(), Start: end.Add(-time.Millisecond), Duration: time.Millisecond, Success: true, SSH: &probe.SSHResult{}}
		if fp != "" {
			r.SSH.HostKey = &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + fp}
		}
		return r
	}
	first := newEnv(t, dir, targets)
	first.store.Update(result(changed, at(0), "a"))
	first.store.Update(result(changed, at(time.Minute), "b"))
	first.store.Update(result(steady, at(0), "s"))
	first.store.Update(result(swapped, at(0), "old"))
	if err := first.snap.Save(true); err != nil {
		t.Fatal(err)
	}

	second := newEnv(t, dir, targets)
	var logs bytes.Buffer
	second.store.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := second.snap.Restore(); err != nil {
		t.Fatal(err)
	}
	later := at(time.Hour)
	second.store.Update(result(changed, later, ""))    // a reused connection
	second.store.Update(result(steady, later, "s"))    // the same key
	second.store.Update(result(swapped, later, "new")) // replaced while down
	got := map[string]collector.HostKeyState{}
	for _, st := range second.store.Snapshot().Targets {
		if st.SSH == nil || st.SSH.HostKey == nil {
			t.Fatalf("%s has no host key after the restart", st.Target.Host)
		}
		got[st.Target.Host] = *st.SSH.HostKey
	}
	want := map[string]collector.HostKeyState{
		"changed": {Type: "ssh-ed25519", FingerprintSHA256: "SHA256:b", Changed: at(time.Minute), Previous: "SHA256:a"},
		"steady":  {Type: "ssh-ed25519", FingerprintSHA256: "SHA256:s"},
		"swapped": {Type: "ssh-ed25519", FingerprintSHA256: "SHA256:new", Changed: later, Previous: "SHA256:old"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("host keys after the restart (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), "SSH host key changed"); n != 1 ||
		!strings.Contains(logs.String(), "host=swapped old_fingerprint=SHA256:old old_type=ssh-ed25519 new_fingerprint=SHA256:new") {
		t.Errorf("want one logged change, of swapped; got:\n%s", logs.String())
	}
}
