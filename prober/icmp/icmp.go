package icmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	probing "github.com/prometheus-community/pro-bing"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/icmp"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Mode is the kind of socket the ICMP prober sends echo requests from.
type Mode int

const (
	// ModeUnprivileged uses Linux "ping sockets" (SOCK_DGRAM, IPPROTO_ICMP),
	// allowed for groups listed in the sysctl net.ipv4.ping_group_range. The
	// kernel sets the ICMP ID and delivers each socket only its own replies.
	ModeUnprivileged Mode = iota
	// ModePrivileged uses raw ICMP sockets, which need CAP_NET_RAW.
	ModePrivileged
)

// String returns the mode's name as shown in logs.
func (m Mode) String() string {
	switch m {
	case ModeUnprivileged:
		return "unprivileged"
	case ModePrivileged:
		return "privileged (raw socket)"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// minSize is the smallest payload the probers send: pro-bing needs an
// 8-byte timestamp and a 16-byte tracker UUID, the shared engine 16 bytes.
const minSize = 24

// defaultInterval is used when a target carries no packet interval;
// pro-bing panics on a zero interval (time.NewTicker).
const defaultInterval = time.Second

// defaultTimeout is used when neither the target nor the context sets a
// timeout, so that one round always ends.
const defaultTimeout = 10 * time.Second

// DetectMode finds out which ICMP socket this process may open. Unless
// forcePrivileged is set it first tries an unprivileged ping socket, then a
// raw socket. If neither can be opened it returns an error saying how to fix
// that; ICMP probes then fail with probe.ReasonPermission.
func DetectMode(forcePrivileged bool) (Mode, error) {
	var dgramErr error
	if !forcePrivileged {
		if dgramErr = tryListen("udp4"); dgramErr == nil {
			return ModeUnprivileged, nil
		}
	}
	rawErr := tryListen("ip4:icmp")
	if rawErr == nil {
		return ModePrivileged, nil
	}
	if forcePrivileged {
		return ModePrivileged, fmt.Errorf(
			"cannot open a raw ICMP socket (%w): grant CAP_NET_RAW "+
				"(e.g. setcap cap_net_raw+ep on the binary, or --cap-add NET_RAW in a container), "+
				"or drop the privileged ICMP setting and allow unprivileged ping sockets via "+
				"sysctl net.ipv4.ping_group_range", rawErr)
	}
	return ModeUnprivileged, fmt.Errorf(
		"cannot open an ICMP socket: unprivileged ping socket: %w; raw socket: %w; "+
			"allow this process's group in sysctl net.ipv4.ping_group_range "+
			"(e.g. sysctl -w net.ipv4.ping_group_range=\"0 2147483647\") "+
			"or grant CAP_NET_RAW (setcap cap_net_raw+ep on the binary, or --cap-add NET_RAW in a container)",
		dgramErr, rawErr)
}

// tryListen opens and closes an ICMP socket of the given network.
func tryListen(network string) error {
	c, err := icmp.ListenPacket(network, "0.0.0.0")
	if err != nil {
		return err
	}
	return c.Close()
}

// roundSpec is what one probe asks of the shared engine.
type roundSpec struct {
	addr netip.Addr
	// src is the address to send from; the zero Addr lets the kernel
	// choose.
	src      netip.Addr
	count    int
	interval time.Duration
	size     int
	timeout  time.Duration
}

// stats is what one round of the shared engine measured.
type stats struct {
	sent, recv int
	rttSum     time.Duration
}

// Prober sends one round of ICMP echo requests per probe.
//
// On Linux every probe of a prober shares one socket per address family and
// source address (an unprivileged ping socket, or one raw socket in
// privileged mode), read by one
// goroutine that hands each reply to its probe by a token in the echo payload
// . pro-bing, the library the project otherwise uses
// for ICMP, opens a socket per probe; that does not scale: measured on a
// 2-core machine at 10,000 loopback targets pinged every second, pro-bing with
// one pinger per target cost 73-111 µs of CPU per ping unprivileged, and with
// raw sockets 743 µs and 4.5% false loss, because every raw socket sees every
// ICMP packet, so the cost grows with the square of the fleet. fping needs
// about 11 µs per ping and smokeping_prober 162% CPU and 297 MB at the same
// load. bench/icmp.sh measures the shared engine against both.
//
// pro-bing remains the fallback: on other systems, and for a probe whose
// shared socket cannot be opened (its error is then pro-bing's own).
type Prober struct {
	res    *dns.Resolver
	mode   Mode
	logger *slog.Logger
	engine *sharedEngine
	// fallbackLogged is set once the first fallback to pro-bing was logged.
	fallbackLogged atomic.Bool

	// adMu guards ad.
	adMu sync.Mutex
	// ad is the adapter of the last sink ProbeBatch was given.
	ad *batchAdapter
}

// NewProber returns an Prober that resolves names through res, opens
// sockets of the given mode and logs to logger (pro-bing's own lines at debug
// level). A nil logger discards output. It opens no socket and starts no
// goroutine: the first probe of each address family opens the shared socket
// and starts its reader. Call Close to release them.
func NewProber(res *dns.Resolver, mode Mode, logger *slog.Logger) *Prober {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Prober{res: res, mode: mode, logger: logger, engine: newEngine(mode, logger)}
}

// Close closes the shared sockets and waits for their reader goroutines to
// end. Probes still running end early and fail; later probes fail at once.
// Close is safe to call more than once.
func (p *Prober) Close() {
	p.engine.close()
}

// Probe resolves the target and sends t.ICMP.Count echo requests,
// t.ICMP.PacketInterval apart, waiting for replies until all have come, the
// timeout passes or ctx ends. The probe succeeds when at least one reply
// arrives; with none the reason is timeout. probe.Result.ICMP is always set and
// counts the requests actually sent. A socket the kernel refuses gives
// probe.ReasonPermission.
func (p *Prober) Probe(ctx context.Context, t *config.Target) probe.Result {
	start := time.Now()
	ir := &probe.ICMPResult{}
	res := probe.Result{ICMP: ir}
	fail := func(reason probe.Reason, err error) probe.Result {
		res.Duration = time.Since(start)
		res.Success, res.Reason, res.Err = false, reason, err
		return res
	}

	addr, err := p.res.Lookup(ctx, t.Name, t.IP)
	if err != nil {
		return fail(probe.ReasonFor(err), err)
	}
	res.Addr = addr

	if err := ctx.Err(); err != nil {
		return fail(probe.ReasonFor(err), fmt.Errorf("icmp %s: %w", t.Host, err))
	}
	timeout := roundTimeout(ctx, t)
	if timeout <= 0 {
		return fail(probe.ReasonTimeout, fmt.Errorf("icmp %s: %w", t.Host, context.DeadlineExceeded))
	}
	round := newRound(t, addr, timeout)

	st, runErr := p.engine.ping(ctx, round)
	if errors.Is(runErr, errEngineUnavailable) {
		if p.fallbackLogged.CompareAndSwap(false, true) {
			p.logger.Warn("Shared ICMP socket unavailable, using one pro-bing socket per probe", "mode", p.mode.String(), "err", runErr)
		}
		st, runErr = p.probeProBing(ctx, t, round)
	}
	p.judge(&res, t, st, runErr, ctx.Err())
	res.Duration = time.Since(start)
	return res
}

// newRound returns the round that one probe of t sends to addr.
func newRound(t *config.Target, addr netip.Addr, timeout time.Duration) roundSpec {
	round := roundSpec{addr: addr, src: t.SourceAddress, count: 1, interval: defaultInterval, size: minSize, timeout: timeout}
	if c := t.ICMP; c != nil {
		round.count = max(c.Count, 1)
		if c.PacketInterval > 0 {
			round.interval = c.PacketInterval.D()
		}
		round.size = max(c.Size, minSize)
	}
	return round
}

// judge fills res (whose ICMP is set) from what a round measured: it
// succeeds with at least one reply; runErr is a socket or send error,
// ctxErr the error of the context that ended the round, if any.
func (p *Prober) judge(res *probe.Result, t *config.Target, st stats, runErr, ctxErr error) {
	ir := res.ICMP
	ir.Sent, ir.Received = st.sent, st.recv
	if st.recv > 0 {
		ir.RTT = st.rttSum / time.Duration(st.recv)
	}
	switch {
	case runErr != nil:
		res.Success, res.Reason, res.Err = false, probe.ReasonFor(runErr), fmt.Errorf("icmp %s (%s): %w", t.Host, p.mode, runErr)
	case ir.Received > 0:
		res.Success = true
	case ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded):
		res.Success, res.Reason, res.Err = false, probe.ReasonFor(ctxErr), ctxErr
	default:
		res.Success, res.Reason, res.Err = false, probe.ReasonTimeout, fmt.Errorf("icmp %s: no echo reply to %d requests", t.Host, ir.Sent)
	}
}

// ProbeBatch starts one probe per request without a goroutine, timer or
// channel per probe: targets given as IP literals go to the shared engine
// in one batch (one lock, sendmmsg); a target that needs a DNS lookup
// gets a goroutine for the lookup only, then joins the engine the same
// way. Probes whose shared socket cannot be opened fall back to pro-bing,
// each in its own goroutine. sink gets every completion, in batches.
func (p *Prober) ProbeBatch(ctx context.Context, reqs []probe.Request, sink probe.BatchSink) {
	ad := p.adapter(sink)
	sp := specPool.Get().(*[]startSpec)
	specs := slices.Grow((*sp)[:0], len(reqs))
	defer func() {
		clear(specs)
		*sp = specs[:0]
		specPool.Put(sp)
	}()
	for i := range reqs {
		r := &reqs[i]
		addr, err := netip.ParseAddr(r.Target.Name)
		if err != nil {
			go p.lookupThenStart(ctx, *r, ad)
			continue
		}
		specs = append(specs, startSpec{req: *r, round: newRound(r.Target, addr.Unmap(), p.batchTimeout(r))})
	}
	p.startSpecs(ctx, specs, ad)
}

// specPool recycles ProbeBatch's round specs: the engine copies what it
// keeps of them.
var specPool = sync.Pool{New: func() any { s := make([]startSpec, 0, 64); return &s }}

// batchTimeout is the round timeout of a batch request: the target's, as
// for Probe, within the request's own.
func (p *Prober) batchTimeout(r *probe.Request) time.Duration {
	timeout := roundTimeout(context.Background(), r.Target)
	if r.Timeout > 0 {
		timeout = min(timeout, r.Timeout)
	}
	return timeout
}

// startSpecs hands specs to the engine and runs the rejected ones on
// pro-bing, or fails them.
func (p *Prober) startSpecs(ctx context.Context, specs []startSpec, ad *batchAdapter) {
	if len(specs) == 0 {
		return
	}
	for _, rj := range p.engine.start(ctx, specs, ad) {
		if !errors.Is(rj.err, errEngineUnavailable) {
			ad.done([]outcome{{req: rj.spec.req, addr: rj.spec.round.addr, err: rj.err, end: time.Now()}})
			continue
		}
		if p.fallbackLogged.CompareAndSwap(false, true) {
			p.logger.Warn("Shared ICMP socket unavailable, using one pro-bing socket per probe", "mode", p.mode.String(), "err", rj.err)
		}
		go func(sp startSpec) {
			pctx, cancel := context.WithTimeout(ctx, sp.round.timeout)
			defer cancel()
			st, err := p.probeProBing(pctx, sp.req.Target, sp.round)
			ad.done([]outcome{{req: sp.req, addr: sp.round.addr, st: st, err: err, ctxErr: ctx.Err(), end: time.Now()}})
		}(rj.spec)
	}
}

// lookupThenStart resolves r's target within its timeout and starts its
// round, or completes it with the lookup's failure.
func (p *Prober) lookupThenStart(ctx context.Context, r probe.Request, ad *batchAdapter) {
	timeout := p.batchTimeout(&r)
	lctx, cancel := context.WithTimeout(ctx, timeout)
	addr, err := p.res.Lookup(lctx, r.Target.Name, r.Target.IP)
	cancel()
	if err != nil {
		ad.fail(r, probe.ReasonFor(err), err)
		return
	}
	left := timeout
	if !r.Start.IsZero() {
		left -= time.Since(r.Start)
	}
	if left <= 0 {
		ad.done([]outcome{{req: r, addr: addr, ctxErr: context.DeadlineExceeded, end: time.Now()}})
		return
	}
	p.startSpecs(ctx, []startSpec{{req: r, round: newRound(r.Target, addr, timeout)}}, ad)
}

// adapter returns the batchAdapter of sink, the same one while the sink
// stays the same, so that the engine hands over the completions of
// consecutive batches together.
func (p *Prober) adapter(sink probe.BatchSink) *batchAdapter {
	p.adMu.Lock()
	defer p.adMu.Unlock()
	if p.ad == nil || p.ad.sink != sink {
		p.ad = &batchAdapter{p: p, sink: sink}
	}
	return p.ad
}

// batchAdapter turns the engine's outcomes into probe completions.
type batchAdapter struct {
	p    *Prober
	sink probe.BatchSink
}

// done converts outcomes and hands them to the sink in one call. The ICMP
// results of one call share one allocation.
func (a *batchAdapter) done(o []outcome) {
	cp := completionPool.Get().(*[]probe.Completion)
	comps := slices.Grow((*cp)[:0], len(o))[:len(o)]
	defer func() {
		clear(comps)
		*cp = comps[:0]
		completionPool.Put(cp)
	}()
	irs := make([]probe.ICMPResult, len(o))
	for i := range o {
		oc := &o[i]
		c := &comps[i]
		c.Request = oc.req
		res := &c.Result
		res.ICMP = &irs[i]
		res.Addr = oc.addr
		a.p.judge(res, oc.req.Target, oc.st, oc.err, oc.ctxErr)
		if !oc.req.Start.IsZero() {
			res.Duration = oc.end.Sub(oc.req.Start)
		}
	}
	a.sink.ProbesDone(comps)
}

// completionPool recycles the completion slices handed to the sink, which
// must not keep them (probe.BatchSink). The ICMP results they point to are
// the results' own and are never recycled.
var completionPool = sync.Pool{New: func() any { s := make([]probe.Completion, 0, 64); return &s }}

// fail completes r with a failure before any packet was sent.
func (a *batchAdapter) fail(r probe.Request, reason probe.Reason, err error) {
	res := probe.Result{ICMP: &probe.ICMPResult{}, Reason: reason, Err: err}
	if !r.Start.IsZero() {
		res.Duration = time.Since(r.Start)
	}
	a.sink.ProbesDone([]probe.Completion{{Request: r, Result: res}})
}

// probeProBing runs one round with its own pro-bing pinger and socket. The
// end of ctx is not an error: it ends the round, which is then judged by the
// replies.
func (p *Prober) probeProBing(ctx context.Context, t *config.Target, r roundSpec) (stats, error) {
	pinger := probing.New(r.addr.String())
	pinger.SetLogger(proBingLogger{logger: p.logger, host: t.Host})
	pinger.SetPrivileged(p.mode == ModePrivileged)
	if r.addr.Is4() {
		pinger.SetNetwork("ip4")
	} else {
		pinger.SetNetwork("ip6")
	}
	// The address comes from our resolver so that pro-bing never resolves
	// on its own (it would use its own, uncached, context-free lookup).
	pinger.SetIPAddr(&net.IPAddr{IP: r.addr.AsSlice(), Zone: r.addr.Zone()})
	if r.src.IsValid() {
		pinger.Source = r.src.String()
	}
	pinger.Count, pinger.Interval, pinger.Size = r.count, r.interval, r.size
	pinger.Timeout = r.timeout
	// Only the summary is used; per-packet slices would just be garbage.
	pinger.RecordRtts, pinger.RecordTTLs = false, false

	runErr := pinger.RunWithContext(ctx)
	st := pinger.Statistics()
	out := stats{sent: st.PacketsSent, recv: st.PacketsRecv}
	if out.recv > 0 {
		out.rttSum = st.AvgRtt * time.Duration(out.recv)
	}
	if runErr != nil && ctx.Err() != nil && errors.Is(runErr, ctx.Err()) {
		runErr = nil
	}
	return out, runErr
}

// discardedDesc describes fleet_icmp_replies_discarded_total.
var discardedDesc = prometheus.NewDesc("fleet_icmp_replies_discarded_total",
	"Echo replies to this exporter's requests that were not counted: duplicate (a second reply to one request of a round in flight), "+
		"late (the round had ended: timed out, or complete), mismatched (from another address than the target, or to a request not sent).",
	[]string{"reason"}, nil)

// Describe implements prometheus.Collector.
func (p *Prober) Describe(ch chan<- *prometheus.Desc) { ch <- discardedDesc }

// Collect implements prometheus.Collector: the shared engine's discarded
// reply counts.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	d := p.engine.discardedReplies()
	for i, n := range d {
		ch <- prometheus.MustNewConstMetric(discardedDesc, prometheus.CounterValue, float64(n), discardNames[i])
	}
}

// roundTimeout returns how long one round may last: the target's timeout,
// else the ICMP probe's own, else a default, and never past ctx's deadline.
func roundTimeout(ctx context.Context, t *config.Target) time.Duration {
	timeout := t.Timeout
	if timeout <= 0 && t.ICMP != nil {
		timeout = t.ICMP.Timeout.D()
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	return timeout
}

// proBingLogger adapts pro-bing's printf-style logger to slog. Everything goes
// to debug: pro-bing logs recoverable per-packet trouble as "FATAL", and the
// probe's result already carries anything that matters.
type proBingLogger struct {
	logger *slog.Logger
	host   string
}

// log writes one pro-bing line at debug level, formatting it only when debug
// is enabled.
func (l proBingLogger) log(level, format string, v ...any) {
	ctx := context.Background()
	if !l.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	l.logger.Log(ctx, slog.LevelDebug, "pro-bing message",
		"host", l.host, "pro_bing_level", level, "detail", fmt.Sprintf(format, v...))
}

// Fatalf, Errorf, Warnf, Infof and Debugf implement probing.Logger.
func (l proBingLogger) Fatalf(format string, v ...any) { l.log("fatal", format, v...) }
func (l proBingLogger) Errorf(format string, v ...any) { l.log("error", format, v...) }
func (l proBingLogger) Warnf(format string, v ...any)  { l.log("warn", format, v...) }
func (l proBingLogger) Infof(format string, v ...any)  { l.log("info", format, v...) }
func (l proBingLogger) Debugf(format string, v ...any) { l.log("debug", format, v...) }

// outcome is what one round measured, handed to the round's sink.
type outcome struct {
	req  probe.Request
	addr netip.Addr
	st   stats
	// err is a socket or send error, or errClosed.
	err error
	// ctxErr is the error of the context that ended the round early.
	ctxErr error
	end    time.Time
}

// outcomeSink takes finished rounds. done may be called from any
// goroutine; the slice is only valid during the call.
type outcomeSink interface {
	done(o []outcome)
}

// startSpec is one round to start: the request and what to send.
type startSpec struct {
	req   probe.Request
	round roundSpec
}

// rejected is a round start could not begin: its socket could not be
// opened (err wraps errEngineUnavailable for a fallback) or the engine is
// closed.
type rejected struct {
	spec startSpec
	err  error
}
