package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// FileName is the name of the snapshot file inside the storage directory.
// Snapshots are written to a temporary file named FileName + ".tmp-" plus a
// random suffix first; a file that could not be read is renamed to
// FileName + ".corrupt-" plus the Unix time.
const FileName = "state.snap"

// SlowWriteEnv names an environment variable for tests only: a Go duration
// the Snapshotter sleeps between writing (and syncing) the temporary file
// and renaming it over the snapshot, so a test can kill the process while a
// snapshot is half done. Nothing else reads it; leave it unset in
// production.
const SlowWriteEnv = "FLEET_STORAGE_TEST_SLOW_WRITE"

const tmpPattern = FileName + ".tmp-*"

// Snapshotter writes the results store to a snapshot file and reads it
// back at start. Construct it with New.
type Snapshotter struct {
	dir, path string
	interval  time.Duration
	store     *collector.Store
	logger    *slog.Logger
	slowWrite time.Duration

	lastSnapshot prometheus.Gauge
	duration     prometheus.Gauge
	size         prometheus.Gauge
	failures     prometheus.Counter

	// mu serialises Save, so the periodic and the final snapshot never
	// race for the rename.
	mu sync.Mutex
}

// New returns a Snapshotter that keeps store in dir, writing every interval
// once Run runs. It registers its metrics on reg (nil skips them) and does
// no I/O: Restore creates dir.
func New(dir string, interval time.Duration, store *collector.Store, logger *slog.Logger, reg prometheus.Registerer) (*Snapshotter, error) {
	if dir == "" {
		return nil, errors.New("storage: empty directory")
	}
	if interval <= 0 {
		return nil, fmt.Errorf("storage: snapshot interval must be positive, got %v", interval)
	}
	s := &Snapshotter{
		dir: dir, path: filepath.Join(dir, FileName), interval: interval,
		store: store, logger: logger,
		lastSnapshot: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_storage_last_snapshot_timestamp_seconds",
			Help: "Unix time at which the last successful state snapshot was taken; 0 before the first.",
		}),
		// A gauge, not a histogram: one snapshot a minute gives a
		// histogram too few samples to say more than the last value does.
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_storage_snapshot_duration_seconds",
			Help: "Wall time of the last successful state snapshot: copy of the store, encoding, write, fsync and rename.",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_storage_snapshot_bytes",
			Help: "Size of the last successfully written state snapshot file.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleet_storage_snapshot_failures_total",
			Help: "State snapshots that could not be written.",
		}),
	}
	if v := os.Getenv(SlowWriteEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("storage: %s: %w", SlowWriteEnv, err)
		}
		s.slowWrite = d
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.lastSnapshot, s.duration, s.size, s.failures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("storage: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Path returns the snapshot file's path.
func (s *Snapshotter) Path() string { return s.path }

// Restore creates the directory if needed, removes temporary files a killed
// process left behind and imports the snapshot file into the store, which
// must already hold the configured targets (Reconcile): targets no longer
// configured are dropped. A missing file starts empty; a file that cannot
// be read or decoded is logged, renamed aside and ignored. Restore fails
// only when the directory cannot be created.
//
// A snapshot not written at clean shutdown may be older than the counters
// the killed process last exported; restoring them would make a counter go
// down, which Prometheus reads as a reset followed by a jump of the whole
// count. So from such a file the counters (probes, ICMP packets) restart at
// zero, a reset Prometheus handles, and everything else is restored. After
// restoring a clean snapshot, Restore at once writes the state again as an
// unclean one, so a crash before the next periodic snapshot cannot restore
// the clean counters a second time.
func (s *Snapshotter) Restore() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if info, err := os.Stat(s.dir); err != nil {
		return fmt.Errorf("storage: %w", err)
	} else if !info.IsDir() {
		return fmt.Errorf("storage: %s is not a directory", s.dir)
	}
	s.removeTemps()

	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.logger.Info("No state snapshot; starting without saved results", "file", s.path)
		return nil
	}
	if err != nil {
		s.moveAside(err)
		return nil
	}
	h, saved, err := Unmarshal(data)
	if err != nil {
		s.moveAside(err)
		return nil
	}
	if !h.Clean {
		resetCounters(saved)
	}
	restored := s.store.Import(saved)
	s.logger.Info("Restored state snapshot", "file", s.path, "created", h.Created.UTC().Format(time.RFC3339Nano),
		"age", time.Since(h.Created).Round(time.Millisecond), "clean", h.Clean,
		"restored", restored, "dropped", len(saved.Targets)-restored)
	if h.Clean {
		if err := s.Save(false); err != nil {
			s.logger.Error("Cannot write the state snapshot", "file", s.path, "err", err)
		}
	}
	return nil
}

// resetCounters zeroes the cumulative counters of saved.
func resetCounters(saved *collector.Saved) {
	for i := range saved.Targets {
		icmp := &saved.Targets[i].State.ICMP
		icmp.PacketsSent, icmp.PacketsReceived = 0, 0
	}
	for i := range saved.SetProbes {
		saved.SetProbes[i].Successes, saved.SetProbes[i].Failures = 0, 0
	}
}

// removeTemps deletes the temporary files of snapshots that never reached
// their rename.
func (s *Snapshotter) removeTemps() {
	temps, err := filepath.Glob(filepath.Join(s.dir, tmpPattern))
	if err != nil {
		return
	}
	for _, t := range temps {
		if err := os.Remove(t); err != nil {
			s.logger.Warn("Cannot remove an unfinished state snapshot", "file", t, "err", err)
			continue
		}
		s.logger.Info("Removed an unfinished state snapshot", "file", t)
	}
}

// moveAside renames the snapshot file out of the way, so it is kept for a
// post-mortem and the next snapshot does not depend on it.
func (s *Snapshotter) moveAside(cause error) {
	aside := s.path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	if err := os.Rename(s.path, aside); err != nil {
		s.logger.Error("Ignoring the state snapshot; cannot move it aside", "file", s.path, "err", cause, "rename_err", err)
		return
	}
	s.logger.Error("Ignoring the state snapshot", "file", s.path, "moved_to", aside, "err", cause)
}

// Save writes one snapshot of the store. clean marks the snapshot taken
// after the last result arrived, at shutdown. The file is replaced
// atomically: a crash at any point leaves the previous snapshot or the new
// one, never a mix.
func (s *Snapshotter) Save(clean bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	data := Marshal(Header{Clean: clean, Created: start}, s.store.Export())
	if err := s.write(data); err != nil {
		s.failures.Inc()
		return err
	}
	s.duration.Set(time.Since(start).Seconds())
	s.size.Set(float64(len(data)))
	s.lastSnapshot.Set(float64(start.UnixNano()) / 1e9)
	return nil
}

func (s *Snapshotter) write(data []byte) (err error) {
	f, err := os.CreateTemp(s.dir, tmpPattern)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("storage: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("storage: fsync %s: %w", tmp, err)
	}
	if s.slowWrite > 0 {
		time.Sleep(s.slowWrite)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	// The rename is durable only once the directory entry is; until then a
	// power loss may bring back the old file, which is still whole.
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: fsync %s: %w", s.dir, err)
	}
	return nil
}

// Run writes a snapshot every interval until ctx ends, then returns nil. A
// failed snapshot is logged and counted, and the next one tried an interval
// later. Run does not write the final snapshot: the caller does, with
// Save(true), once no result can arrive any more.
func (s *Snapshotter) Run(ctx context.Context) error {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := s.Save(false); err != nil {
				s.logger.Error("Cannot write the state snapshot", "file", s.path, "err", err)
			}
		}
	}
}
