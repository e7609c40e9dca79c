package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/sync/errgroup"

	"github.com/fleet-exporter/fleet_exporter/cluster"
	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/discovery"
	"github.com/fleet-exporter/fleet_exporter/preflight"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober"
	"github.com/fleet-exporter/fleet_exporter/schedule"
	"github.com/fleet-exporter/fleet_exporter/storage"
)

// shutdownGrace bounds how long in-flight probes and HTTP requests may take
// to finish after SIGTERM; the issue requires exit within 5 s.
const shutdownGrace = 3 * time.Second

// schedulerCoalesce is the shortest time between two scheduler passes; a
// probe starts at most about this late.
const schedulerCoalesce = 10 * time.Millisecond

// fleet wires the probers, pool, scheduler and store for one process.
type fleet struct {
	logger *slog.Logger
	store  *collector.Store
	// hist holds the per-set latency distributions; runDaemon registers
	// it, --once leaves it unregistered.
	hist    *collector.SetHistograms
	pool    *schedule.Pool
	sched   *schedule.Scheduler
	probers *prober.Set
	// permission rate-limits the warning about probes the kernel refused.
	permission permissionLog
	// reconcilers take every new target list, in this order: the store
	// first, so results of added targets have a home, the probers last, so
	// connections of removed targets close after the scheduler stopped
	// submitting them.
	reconcilers []probe.Reconciler

	// owner filters the target list down to what this cluster member owns;
	// nil probes every target.
	owner *cluster.Cluster
	// applyMu serialises apply and rebalance and guards all.
	applyMu sync.Mutex
	// all is the last full target list, before the ownership filter.
	all []*config.Target
}

// close releases the probers' sockets and pooled connections.
func (f *fleet) close() {
	f.probers.Close()
}

// newFleet builds the probing pipeline: config -> scheduler -> pool ->
// probers -> sink -> store, and back from the sink to the scheduler, which
// retries failed targets sooner. Nothing runs until Run is called. The daemon
// runs the scheduler; --once submits through a schedule.OneShot instead.
func newFleet(opts *options, cfg *config.Config, targets []*config.Target, logger *slog.Logger, reg prometheus.Registerer, sink func(probe.Result)) (*fleet, error) {
	return newOwnedFleet(opts, cfg, targets, logger, reg, sink, nil)
}

// newOwnedFleet is newFleet for a cluster member: it probes only the
// targets owner assigns to it (all of them when owner is nil).
func newOwnedFleet(opts *options, cfg *config.Config, targets []*config.Target, logger *slog.Logger, reg prometheus.Registerer, sink func(probe.Result), owner *cluster.Cluster) (*fleet, error) {
	probers := prober.Open(prober.Options{ICMPPrivileged: opts.icmpPrivileged, QuietICMP: opts.quietICMP, DNS: cfg.Global.DNS, BastionLimits: cfg.Global.Limits.Bastion, Registerer: reg}, logger)
	f := &fleet{logger: logger, store: collector.NewStore(), hist: collector.NewSetHistograms(), probers: probers, owner: owner}
	f.store.SetLogger(logger.With("component", "store"))
	// observe is what every result goes through after the store, the
	// scheduler and the per-set histograms saw it, one at a time or in a
	// batch.
	observe := func(r *probe.Result) {
		if !r.Success {
			logger.Debug("Probe failed", "set", r.Key.Set, "host", r.Key.Host, "probe", r.Key.Probe, "reason", string(r.Reason), "err", r.Err)
			if r.Reason == probe.ReasonPermission {
				f.permission.log(logger, *r)
			}
		}
		if sink != nil {
			sink(*r)
		}
	}
	storeSink := func(r probe.Result) {
		f.store.Update(r)
		// The scheduler moves a failing target to its retry interval. It
		// exists before the pool runs, so this is never called without it.
		f.sched.Observe(r)
		f.hist.Observe(r)
		observe(&r)
	}
	pool, err := schedule.NewPool(cfg.Global, probers.Probers(), storeSink, logger.With("component", "pool"), reg)
	if err != nil {
		f.close()
		return nil, err
	}
	// Batch probers (ICMP) hand results over a batch at a time: one store
	// lock and one scheduler lock per batch instead of per result.
	pool.SetBatchSink(func(rs []probe.Result) {
		f.store.UpdateBatch(rs)
		f.sched.ObserveBatch(rs)
		f.hist.ObserveBatch(rs)
		for i := range rs {
			observe(&rs[i])
		}
	})
	f.pool = pool
	f.sched = schedule.NewScheduler(pool.Submit, logger.With("component", "scheduler"))
	// Due targets are submitted in batches of schedulerCoalesce: a large
	// ICMP fleet then costs one scheduler pass, one pool dispatch and one
	// sendmmsg run per batch rather than per target.
	f.sched.SetCoalesce(schedulerCoalesce)
	f.sched.SetSubmitBatch(pool.SubmitBatch)
	f.reconcilers = []probe.Reconciler{f.store, f.hist, f.sched, f.pool, f.probers}
	f.apply(cfg, targets)
	return f, nil
}

// apply hands a config that passed preflight to every component. Each keeps
// the state of targets whose key and fingerprint did not change. targets is
// the whole fleet (configured and discovered); a cluster member reconciles
// the part it owns.
func (f *fleet) apply(cfg *config.Config, targets []*config.Target) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.pool.SetLimits(cfg.Global)
	f.probers.SetDNS(cfg.Global.DNS)
	f.probers.SetBastionLimits(cfg.Global.Limits.Bastion)
	f.all = targets
	f.reconcileOwned()
}

// rebalance reconciles again after the cluster membership changed: targets
// this member gained start at their hashed phase, lost ones stop, the rest
// keep their schedule and results.
func (f *fleet) rebalance() {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.owner != nil && !f.owner.Pending() {
		return
	}
	f.reconcileOwned()
}

// reconcileOwned hands the owned part of f.all to every component; the
// caller holds applyMu.
func (f *fleet) reconcileOwned() {
	targets := f.all
	if f.owner != nil {
		targets = f.owner.Filter(targets)
	}
	for _, r := range f.reconcilers {
		r.Reconcile(targets)
	}
}

// runDaemon serves /metrics and probes until ctx ends.
// discVersion is disc's Version when targets were built from its hosts.
func runDaemon(ctx context.Context, opts *options, cfg *config.Config, targets []*config.Target, disc *discovery.Manager, discVersion uint64, logger *slog.Logger) int {
	logStartup(logger, cfg)
	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector(exporterName))
	if !opts.disableExporterMetrics {
		reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	// A cluster member learns its first membership view before it builds
	// the fleet, so it never reconciles targets it does not own.
	var member atomic.Pointer[fleet]
	cl, stopCluster, err := startCluster(ctx, opts, logger.With("component", "cluster"), reg, func() {
		if f := member.Load(); f != nil {
			f.rebalance()
		}
	})
	if err != nil {
		logger.Error("Cannot start clustering", "err", err)
		return 1
	}
	defer stopCluster()
	f, err := newOwnedFleet(opts, cfg, targets, logger, reg, nil, cl)
	if err != nil {
		logger.Error("Cannot start the probe pool", "err", err)
		return 1
	}
	defer f.close()
	member.Store(f)
	if cl != nil {
		// A change that arrived between the first view and the store above.
		f.rebalance()
	}
	reg.MustRegister(f.hist)
	// The store's families are written by the /metrics handler straight
	// from a snapshot (package exposition), not gathered through reg.
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleet_ssh_connections_opened_total",
		Help: "SSH connections opened by the SSH prober, fresh or reused.",
	}, func() float64 { return float64(f.probers.SSHConnectionsOpened()) }))

	// The snapshot is restored after the store holds the configured targets
	// and before the HTTP server starts, so the first scrape already serves
	// every known host's last result.
	var snap *storage.Snapshotter
	if opts.storagePath != "" {
		snap, err = storage.New(opts.storagePath, opts.snapshotInterval, f.store, logger.With("component", "storage"), reg)
		if err == nil {
			err = snap.Restore()
		}
		if err != nil {
			logger.Error("Cannot use the storage directory", "dir", opts.storagePath, "err", err)
			return 1
		}
	}

	reg.MustRegister(disc)
	rl := newReloader(opts.configFile, cfg, targets, f, logger.With("component", "reload"), reg)
	rl.disc, rl.discVersion, rl.ctx = disc, discVersion, ctx
	rl.preflight = preflight.Options{HTTPConnections: opts.web.maxConnections}
	mux, err := newMux(opts, reg, rl, f, cl, logger)
	if err != nil {
		logger.Error("Cannot build the HTTP routes", "err", err)
		return 1
	}
	srv := newHTTPServer(mux, opts.web, logger.With("component", "http"), reg)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	g, gctx := errgroup.WithContext(ctx)
	poolStopped := make(chan struct{})
	g.Go(func() error {
		defer close(poolStopped)
		return f.pool.Run(gctx)
	})
	if snap != nil {
		g.Go(func() error {
			err := snap.Run(gctx)
			// The final snapshot waits for the probes in flight, so it
			// holds every result this process exported.
			<-poolStopped
			if serr := snap.Save(true); serr != nil {
				logger.Error("Cannot write the final state snapshot", "file", snap.Path(), "err", serr)
			} else {
				logger.Info("Wrote the final state snapshot", "file", snap.Path())
			}
			return err
		})
	}
	g.Go(func() error { return f.sched.Run(gctx) })
	g.Go(func() error { return disc.Run(gctx) })
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				_ = rl.reload()
			case <-disc.Changes():
				rl.applyDiscovered()
			}
		}
	})
	g.Go(func() error {
		err := web.ListenAndServe(srv, opts.webFlags, logger)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http server: %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	rl.ready.Store(true)
	err = g.Wait()
	if err != nil {
		logger.Error("Exiting on error", "err", err)
		return 1
	}
	logger.Info("Shut down cleanly")
	return 0
}

// reloader re-reads the config file on SIGHUP or POST /-/reload. It keeps
// the running config whenever the new one does not load completely.
type reloader struct {
	filename  string
	preflight preflight.Options
	fleet     *fleet
	// disc runs the discovery sources of the current config; ctx, the
	// daemon's, bounds the reads a reload makes.
	disc *discovery.Manager
	// discVersion is disc's Version that the running targets were built
	// from (guarded by mu): a change signal without a newer version, such
	// as the one every ApplyConfig sends, rebuilds nothing.
	discVersion uint64
	ctx         context.Context
	logger      *slog.Logger
	ready       atomic.Bool

	reloadOK prometheus.Gauge
	// fileMu guards lastReloadOK and badFiles, which set reloadOK with
	// the credential files that failed to reload since (fileChanged).
	fileMu          sync.Mutex
	lastReloadOK    bool
	badFiles        map[string]bool
	reloadTimestamp prometheus.Gauge
	// pages holds what the status pages show of reloads.
	pages reloadPages

	// mu serialises reloads and guards current.
	mu      sync.Mutex
	current *config.Config
	// targets is current's target list, to tell what a reload changes.
	targets []*config.Target
}

func newReloader(filename string, cfg *config.Config, targets []*config.Target, f *fleet, logger *slog.Logger, reg prometheus.Registerer) *reloader {
	rl := &reloader{
		filename: filename,
		fleet:    f,
		logger:   logger,
		current:  cfg,
		targets:  targets,
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful (1) or not (0).",
		}),
		reloadTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load.",
		}),
	}
	rl.reloadOK.Set(1)
	rl.lastReloadOK = true
	rl.reloadTimestamp.SetToCurrentTime()
	reg.MustRegister(rl.reloadOK, rl.reloadTimestamp)
	if f != nil {
		f.probers.OnFileChange(rl.fileChanged)
	}
	rl.pages.succeeded(cfg)
	return rl
}

// fileChanged hears of the SSH prober's rereads of changed key, password
// and known_hosts files. Those are reread without SIGHUP; one that no
// longer loads keeps its last good version in use, and counts as a failed
// reload until it loads again or a reload succeeds.
func (rl *reloader) fileChanged(paths []string, err error) {
	rl.fileMu.Lock()
	defer rl.fileMu.Unlock()
	key := strings.Join(paths, "\x00")
	if err != nil {
		if rl.badFiles == nil {
			rl.badFiles = map[string]bool{}
		}
		rl.badFiles[key] = true
	} else {
		delete(rl.badFiles, key)
	}
	rl.updateReloadOKLocked()
}

// setReloadOK records the outcome of a reload; clearFiles forgets the
// files that failed to reload, after a reload that checked them all.
func (rl *reloader) setReloadOK(ok, clearFiles bool) {
	rl.fileMu.Lock()
	defer rl.fileMu.Unlock()
	rl.lastReloadOK = ok
	if clearFiles {
		clear(rl.badFiles)
	}
	rl.updateReloadOKLocked()
}

// updateReloadOKLocked sets fleet_config_last_reload_successful from the
// last reload and the files reread since. rl.fileMu must be held.
func (rl *reloader) updateReloadOKLocked() {
	if rl.lastReloadOK && len(rl.badFiles) == 0 {
		rl.reloadOK.Set(1)
	} else {
		rl.reloadOK.Set(0)
	}
}

// configName names the running config for the status pages.
func (rl *reloader) configName() string {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.current.Filename
}

// errNoConfigFile is returned by a reload when the daemon runs on the
// embedded default.
var errNoConfigFile = errors.New("no --config.file given: the embedded default cannot be reloaded")

// errStdinConfig is returned by a reload when the config came from stdin.
var errStdinConfig = errors.New("--config.file=- read the config from stdin, which cannot be read again: nothing to reload")

// reload reads the config file once; unchanged bytes are a no-op, a bad
// file keeps the running config.
func (rl *reloader) reload() error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.filename == "" || rl.filename == stdinConfig {
		err := errNoConfigFile
		if rl.filename == stdinConfig {
			err = errStdinConfig
		}
		rl.logger.Warn("Reload requested", "err", err)
		return err
	}
	err := rl.reloadLocked()
	if err != nil {
		rl.setReloadOK(false, false)
		rl.logger.Error("Reload failed; keeping the running configuration", "file", rl.filename, "err", err)
		rl.pages.failed(err)
		return err
	}
	// preflight has just loaded every file the config names.
	rl.setReloadOK(true, true)
	rl.reloadTimestamp.SetToCurrentTime()
	rl.pages.succeeded(rl.current)
	return nil
}

func (rl *reloader) reloadLocked() error {
	data, err := config.ReadRegularFile(rl.filename)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) == rl.current.Hash {
		rl.logger.Info("Configuration unchanged", "file", rl.filename)
		return nil
	}
	cfg, err := config.Parse(data, rl.filename)
	if err != nil {
		return err
	}
	// The new config's discovery sources are read before its targets are
	// checked; a config that then fails goes back to the running sources,
	// each with its last good read.
	if err := rl.disc.ApplyConfig(rl.ctx, cfg); err != nil {
		return err
	}
	pre := rl.preflight
	version := rl.disc.Version()
	pre.Discovered = rl.disc.Hosts()
	report, err := preflight.Check(cfg, pre)
	if err != nil {
		if rerr := rl.disc.ApplyConfig(rl.ctx, rl.current); rerr != nil {
			rl.logger.Error("Cannot restore the running discovery sources", "err", rerr)
		}
		return err
	}
	report.Log(rl.logger, cfg.Filename)
	rl.applyTargets(cfg, report.Targets)
	rl.discVersion = version
	rl.logger.Info("Configuration reloaded", "file", rl.filename, "sets", len(cfg.HostSets), "targets", len(report.Targets))
	return nil
}

// applyDiscovered rebuilds the target list after discovery changed the
// hosts of a set: the running config's hosts plus every source's last good
// hosts. Unchanged targets keep their schedule and results, as on reload.
func (rl *reloader) applyDiscovered() {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	version := rl.disc.Version()
	if version == rl.discVersion {
		return
	}
	targets, warnings, err := rl.current.TargetsWith(rl.disc.Hosts())
	if err != nil {
		rl.logger.Error("Discovered targets refused; keeping the running targets", "err", err)
		return
	}
	for _, w := range warnings {
		rl.logger.Warn("Host set expansion", "detail", w)
	}
	rl.applyTargets(rl.current, targets)
	rl.discVersion = version
}

// applyTargets hands the target list of cfg (its hosts and the discovered
// ones) to every component and makes cfg the running config. Reloads and
// discovery changes both end here.
func (rl *reloader) applyTargets(cfg *config.Config, targets []*config.Target) {
	logTargetChanges(rl.logger, rl.targets, targets)
	rl.fleet.apply(cfg, targets)
	rl.current = cfg
	rl.targets = targets
}

// permissionLogEvery is how often, per set and probe type, a probe the
// kernel refused is logged at warn.
const permissionLogEvery = 5 * time.Minute

// permissionLog logs probes that failed with reason permission, at most
// once per set and probe type per permissionLogEvery: the reason alone does
// not say which of several causes it is, and a debug line is easily missed.
type permissionLog struct {
	// mu guards last.
	mu   sync.Mutex
	last map[[2]string]time.Time
}

// permissionCauses names the likely causes of an EPERM/EACCES per probe type.
func permissionCauses(probeType string) string {
	const firewall = "an egress firewall rule on the exporter's host (nftables or iptables OUTPUT drop or reject: the kernel answers a locally dropped packet with EPERM)"
	if probeType == config.ProbeICMP {
		return "the exporter has neither CAP_NET_RAW nor a group in net.ipv4.ping_group_range (see the ICMP socket mode logged at start), or " + firewall
	}
	return firewall + ", or a security module (SELinux, AppArmor, a systemd IPAddressDeny=) denying the connection"
}

func (p *permissionLog) log(logger *slog.Logger, r probe.Result) {
	k := [2]string{r.Key.Set, r.Key.Probe}
	now := time.Now()
	p.mu.Lock()
	if p.last == nil {
		p.last = map[[2]string]time.Time{}
	}
	last, seen := p.last[k]
	if seen && now.Sub(last) < permissionLogEvery {
		p.mu.Unlock()
		return
	}
	p.last[k] = now
	p.mu.Unlock()
	logger.Warn("The kernel refused a probe (reason permission)", "set", r.Key.Set, "host", r.Key.Host, "probe", r.Key.Probe,
		"likely_causes", permissionCauses(r.Key.Probe), "logged_at_most_every", permissionLogEvery, "err", r.Err)
}
