package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/icmp"
	"github.com/fleet-exporter/fleet_exporter/schedule"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Measurement is one JSON line of output.
type Measurement struct {
	Tool     string  `json:"tool"` // engine, fping, smokeping
	Mode     string  `json:"mode"` // privileged, unprivileged
	Targets  int     `json:"targets"`
	Count    int     `json:"count"`
	Interval string  `json:"interval"`
	Pings    int64   `json:"pings"`
	Replies  int64   `json:"replies"`
	Lost     int64   `json:"lost"`
	Skipped  uint64  `json:"skipped,omitempty"`
	CPUSec   float64 `json:"cpu_seconds"`
	WallSec  float64 `json:"wall_seconds"`
	CPUPerUS float64 `json:"cpu_us_per_ping"`
	CPUPct   float64 `json:"cpu_percent"`
	RSSBytes int64   `json:"rss_bytes"`
	RSSPerT  float64 `json:"rss_bytes_per_target"`
	Error    string  `json:"error,omitempty"`
}

// run parses the command line and runs one subcommand; it returns the exit
// code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("icmpbench", "ICMP at scale benchmark on loopback.")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)

	var c common
	addCommon := func(cmd *kingpin.CmdClause) {
		cmd.Flag("targets", "Number of loopback targets (127.16.0.1 upwards).").Default("10000").IntVar(&c.targets)
		cmd.Flag("count", "Echo requests per target per interval.").Default("1").IntVar(&c.count)
		cmd.Flag("interval", "Time between two probes of one target.").Default("1s").DurationVar(&c.interval)
		cmd.Flag("packet-interval", "Time between the echo requests of one probe.").Default("100ms").DurationVar(&c.packetInterval)
		cmd.Flag("duration", "Measurement window after the warm-up.").Default("10s").DurationVar(&c.duration)
		cmd.Flag("mode", "privileged (raw socket) or unprivileged (ping socket).").Default("privileged").EnumVar(&c.mode, "privileged", "unprivileged")
	}
	engineCmd := app.Command("engine", "Measure the exporter's ICMP pipeline in this process.")
	addCommon(engineCmd)
	concurrency := engineCmd.Flag("concurrency", "Pool concurrency for ICMP.").Default("4096").Int()
	fpingCmd := app.Command("fping", "Measure fping -c on the same targets.")
	addCommon(fpingCmd)
	smokeCmd := app.Command("smokeping", "Measure prometheus-smokeping-prober on the same targets.")
	addCommon(smokeCmd)
	smokePort := smokeCmd.Flag("port", "Loopback port for smokeping_prober's metrics.").Default("19374").Int()
	suiteCmd := app.Command("suite", "Run the benchmark matrix, each measurement in a fresh process.")
	suiteMode := suiteCmd.Flag("mode", "privileged or unprivileged.").Default("privileged").Enum("privileged", "unprivileged")
	suiteRuns := suiteCmd.Flag("runs", "Repetitions of each measurement.").Default("3").Int()
	suiteDuration := suiteCmd.Flag("duration", "Measurement window.").Default("10s").Duration()
	suiteSmoke := suiteCmd.Flag("smokeping", "Also measure smokeping_prober (and the engine) at 1,000 targets.").Default("true").Bool()
	reportCmd := app.Command("report", "Read suite JSON lines on stdin, write Markdown medians.")

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx := context.Background()
	var m Measurement
	switch cmd {
	case engineCmd.FullCommand():
		m, err = runEngine(ctx, c, *concurrency)
	case fpingCmd.FullCommand():
		m, err = runFping(ctx, c)
	case smokeCmd.FullCommand():
		m, err = runSmokeping(ctx, c, *smokePort)
	case suiteCmd.FullCommand():
		return runSuite(ctx, *suiteMode, *suiteRuns, *suiteDuration, *suiteSmoke, stdout, stderr)
	case reportCmd.FullCommand():
		if err := report(os.Stdin, stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	if err != nil {
		m.Error = err.Error()
	}
	_ = json.NewEncoder(stdout).Encode(m)
	if err != nil {
		fmt.Fprintln(stderr, "icmpbench:", err)
		return 1
	}
	return 0
}

// common holds the flags every measurement shares.
type common struct {
	targets        int
	count          int
	interval       time.Duration
	packetInterval time.Duration
	duration       time.Duration
	mode           string
}

// measurement returns a Measurement with c's parameters filled in.
func (c common) measurement(tool string) Measurement {
	return Measurement{Tool: tool, Mode: c.mode, Targets: c.targets, Count: c.count, Interval: c.interval.String()}
}

// timeout is the per-probe timeout: below the interval, and long enough for
// count packets.
func (c common) timeout() time.Duration {
	return min(c.interval*9/10, time.Duration(c.count-1)*c.packetInterval+time.Second)
}

// addresses returns n loopback addresses from 127.16.0.1 upwards, skipping
// last octets 0 and 255.
func addresses(n int) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		a, b, d := 16+i/(254*256), (i/254)%256, 1+i%254
		if a > 254 {
			break
		}
		out = append(out, fmt.Sprintf("127.%d.%d.%d", a, b, d))
	}
	return out
}

// rusageSelf returns this process's user+system CPU time.
func rusageSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssOf returns VmRSS of pid ("self" for this process) in bytes.
func rssOf(pid string) int64 {
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// runEngine runs the scheduler, pool and icmp.Prober over c.targets targets
// for one interval of warm-up and c.duration of measurement.
func runEngine(ctx context.Context, c common, concurrency int) (Measurement, error) {
	m := c.measurement("engine")
	mode := icmp.ModePrivileged
	if c.mode == "unprivileged" {
		mode = icmp.ModeUnprivileged
	}
	if got, err := icmp.DetectMode(mode == icmp.ModePrivileged); err != nil || got != mode {
		return m, fmt.Errorf("ICMP mode %s not available here (detected %s, %v)", mode, got, err)
	}
	icmpCfg := &config.ICMPProbe{
		Count: c.count, PacketInterval: config.Duration(c.packetInterval), Size: config.DefaultICMPSize,
		Timeout: config.Duration(c.timeout()),
	}
	targets := make([]*config.Target, 0, c.targets)
	for _, a := range addresses(c.targets) {
		targets = append(targets, &config.Target{
			Set: "bench", Host: a, Name: a, Probe: config.ProbeICMP,
			Interval: c.interval, Timeout: c.timeout(), ICMP: icmpCfg, Fingerprint: "1",
		})
	}
	if len(targets) != c.targets {
		return m, fmt.Errorf("only %d loopback addresses available", len(targets))
	}

	var pings, replies, results atomic.Int64
	var measuring atomic.Bool
	sink := func(r probe.Result) {
		if !measuring.Load() || r.ICMP == nil {
			return
		}
		results.Add(1)
		pings.Add(int64(r.ICMP.Sent))
		replies.Add(int64(r.ICMP.Received))
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := icmp.NewProber(dns.New(dns.Options{}), mode, logger)
	defer p.Close()
	g := config.Global{Concurrency: concurrency}
	g.Limits.ICMP.Concurrency = concurrency
	pool, err := schedule.NewPool(g, map[string]probe.Prober{config.ProbeICMP: p}, sink, logger, nil)
	if err != nil {
		return m, err
	}
	sched := schedule.NewScheduler(pool.Submit, logger)
	sched.Reconcile(targets)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = pool.Run(runCtx) })
	wg.Go(func() { _ = sched.Run(runCtx) })

	// Warm-up: one full interval, so every target has run once and the
	// heap, pools and socket buffers are at their steady size.
	time.Sleep(c.interval + c.timeout())
	skipped0 := pool.Stats().Skipped
	cpu0, t0 := rusageSelf(), time.Now()
	measuring.Store(true)
	time.Sleep(c.duration)
	cpu1, t1 := rusageSelf(), time.Now()
	measuring.Store(false)
	m.RSSBytes = rssOf("self")
	m.Skipped = pool.Stats().Skipped - skipped0
	cancel()
	wg.Wait()

	m.Pings, m.Replies = pings.Load(), replies.Load()
	m.Lost = m.Pings - m.Replies
	m.CPUSec, m.WallSec = (cpu1 - cpu0).Seconds(), t1.Sub(t0).Seconds()
	finish(&m)
	runtime.KeepAlive(targets)
	return m, nil
}

// finish fills in the derived fields.
func finish(m *Measurement) {
	if m.Pings > 0 {
		m.CPUPerUS = m.CPUSec * 1e6 / float64(m.Pings)
	}
	if m.WallSec > 0 {
		m.CPUPct = 100 * m.CPUSec / m.WallSec
	}
	if m.Targets > 0 {
		m.RSSPerT = float64(m.RSSBytes) / float64(m.Targets)
	}
}

// runFping runs fping -c over the targets, pacing its packets so that the
// targets are pinged once per interval, like the exporter does.
func runFping(ctx context.Context, c common) (Measurement, error) {
	m := c.measurement("fping")
	bin, err := exec.LookPath("fping")
	if err != nil {
		return m, err
	}
	dir, err := os.MkdirTemp("", "icmpbench-fping")
	if err != nil {
		return m, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "targets")
	if err := os.WriteFile(file, []byte(strings.Join(addresses(c.targets), "\n")+"\n"), 0o644); err != nil {
		return m, err
	}
	// -i is the gap between any two packets, -p between two packets to one
	// target: one round over all targets takes one interval.
	gap := float64(c.interval.Microseconds()) / 1000 / float64(c.targets)
	period := max(c.interval.Milliseconds(), 1)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.count+2)*c.interval+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-q", "-c", strconv.Itoa(c.count),
		"-p", strconv.FormatInt(period, 10), "-i", strconv.FormatFloat(gap, 'f', 3, 64),
		"-t", strconv.FormatInt(c.timeout().Milliseconds(), 10), "-r", "0", "-f", file)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := cmd.Run()
	m.WallSec = time.Since(start).Seconds()
	if cmd.ProcessState == nil {
		return m, runErr
	}
	// fping exits 1 when some target did not answer; the counts tell.
	m.CPUSec = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.RSSBytes = ru.Maxrss * 1024
	}
	for line := range strings.Lines(stderr.String()) {
		// "127.16.0.1 : xmt/rcv/%loss = 3/3/0%, min/avg/max = ..."
		_, stats, ok := strings.Cut(line, "xmt/rcv/%loss = ")
		if !ok {
			continue
		}
		f := strings.SplitN(stats, "/", 3)
		if len(f) < 2 {
			continue
		}
		x, _ := strconv.ParseInt(f[0], 10, 64)
		r, _ := strconv.ParseInt(f[1], 10, 64)
		m.Pings += x
		m.Replies += r
	}
	m.Lost = m.Pings - m.Replies
	finish(&m)
	if m.Pings == 0 {
		return m, fmt.Errorf("fping reported no packets (%v): %.500s", runErr, stderr.String())
	}
	return m, nil
}

// runSmokeping starts prometheus-smokeping-prober on the targets, lets it
// warm up, then measures its CPU time over c.duration. Packets sent and
// received come from its smokeping_requests_total and
// smokeping_response_duration_seconds_count, scraped around the window.
func runSmokeping(ctx context.Context, c common, port int) (Measurement, error) {
	m := c.measurement("smokeping")
	bin, err := exec.LookPath("prometheus-smokeping-prober")
	if err != nil {
		return m, err
	}
	dir, err := os.MkdirTemp("", "icmpbench-smokeping")
	if err != nil {
		return m, err
	}
	defer os.RemoveAll(dir)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "targets:\n- interval: %s\n  network: ip4\n  protocol: icmp\n  size: %d\n  hosts:\n", c.interval, config.DefaultICMPSize)
	for _, a := range addresses(c.targets) {
		fmt.Fprintf(&cfg, "  - %s\n", a)
	}
	file := filepath.Join(dir, "smokeping.yml")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o644); err != nil {
		return m, err
	}
	priv := "--privileged"
	if c.mode == "unprivileged" {
		priv = "--no-privileged"
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(ctx, c.duration+10*c.interval+10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+file, "--web.listen-address="+addr, priv, "--log.level=warn")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return m, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	pid := strconv.Itoa(cmd.Process.Pid)

	// Wait (bounded) until it serves metrics, then one warm-up interval.
	url := "http://" + addr + "/metrics"
	// 10,000 pingers take a while to start, and a scrape of their
	// histograms is slow while they saturate the CPUs.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, _, err := scrapeSmokeping(ctx, url); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("smokeping_prober did not come up: %.500s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * c.interval)

	sent0, recv0, err := scrapeSmokeping(ctx, url)
	if err != nil {
		return m, err
	}
	s0 := time.Now()
	cpu0, err := procCPU(pid)
	if err != nil {
		return m, err
	}
	t0 := time.Now()
	time.Sleep(c.duration)
	cpu1, err := procCPU(pid)
	if err != nil {
		return m, err
	}
	t1 := time.Now()
	m.RSSBytes = rssOf(pid)
	sent1, recv1, err := scrapeSmokeping(ctx, url)
	if err != nil {
		return m, err
	}
	s1 := time.Now()
	// Scale the scraped counts to the CPU window.
	scale := t1.Sub(t0).Seconds() / s1.Sub(s0).Seconds()
	m.Pings = int64(float64(sent1-sent0) * scale)
	m.Replies = int64(float64(recv1-recv0) * scale)
	m.Lost = m.Pings - m.Replies
	m.CPUSec, m.WallSec = (cpu1 - cpu0).Seconds(), t1.Sub(t0).Seconds()
	finish(&m)
	return m, nil
}

// procCPU returns utime+stime of pid from /proc/pid/stat.
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// scrapeSmokeping sums smokeping_requests_total and
// smokeping_response_duration_seconds_count over all targets.
func scrapeSmokeping(ctx context.Context, url string) (sent, recv int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "smokeping_requests_total{"):
			dst = &sent
		case strings.HasPrefix(line, "smokeping_response_duration_seconds_count{"):
			dst = &recv
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			*dst += int64(v)
		}
	}
	return sent, recv, sc.Err()
}

// suiteCase is one row of the matrix.
type suiteCase struct {
	targets  int
	count    int
	interval time.Duration
}

// runSuite runs the matrix in mode, each measurement in a child process of
// this binary, and prints every measurement as a JSON line.
func runSuite(ctx context.Context, mode string, runs int, duration time.Duration, smoke bool, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// 10,000 targets every second and 100,000 every ten seconds: the same
	// probe rate, 10,000 probes a second.
	cases := []suiteCase{
		{10000, 1, time.Second},
		{10000, 3, time.Second},
		{100000, 1, 10 * time.Second},
		{100000, 3, 10 * time.Second},
	}
	failed := false
	one := func(args ...string) {
		fmt.Fprintln(stderr, "icmpbench:", strings.Join(args, " "))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, self, args...)
		cmd.Stderr = stderr
		out, err := cmd.Output()
		if err != nil {
			failed = true
			fmt.Fprintln(stderr, "icmpbench: failed:", err)
		}
		_, _ = stdout.Write(out)
	}
	for _, sc := range cases {
		common := []string{
			"--targets", strconv.Itoa(sc.targets), "--count", strconv.Itoa(sc.count),
			"--interval", sc.interval.String(), "--duration", duration.String(), "--mode", mode,
		}
		for range runs {
			one(append([]string{"engine"}, common...)...)
			one(append([]string{"fping"}, common...)...)
		}
	}
	if smoke {
		// smokeping_prober 0.6.1 does not finish starting 10,000 pingers on
		// a 2-core host (it saturates both CPUs first), so it and the engine
		// are compared at 1,000 targets a second.
		common := []string{"--targets", "1000", "--count", "1", "--interval", "1s", "--duration", duration.String(), "--mode", mode}
		for range runs {
			one(append([]string{"smokeping"}, common...)...)
			one(append([]string{"engine"}, common...)...)
		}
	}
	if failed {
		return 1
	}
	return 0
}

// report reads measurements and writes one Markdown table row per (mode,
// targets, count, tool) with the medians, and the ratios to fping and
// smokeping_prober.
func report(r io.Reader, w io.Writer) error {
	type key struct {
		mode           string
		targets, count int
		tool           string
	}
	groups := map[key][]Measurement{}
	var order []key
	dec := json.NewDecoder(r)
	for {
		var m Measurement
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if m.Error != "" {
			continue
		}
		k := key{m.Mode, m.Targets, m.Count, m.Tool}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	med := func(ms []Measurement, f func(Measurement) float64) float64 {
		v := make([]float64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	fmt.Fprintln(w, "| mode | targets | count | interval | tool | runs | CPU µs/ping | CPU % | pings | lost | RSS MB | RSS/target | vs fping | vs smokeping |")
	fmt.Fprintln(w, "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range order {
		ms := groups[k]
		cpu := med(ms, func(m Measurement) float64 { return m.CPUPerUS })
		ratio := func(tool string) string {
			o := groups[key{k.mode, k.targets, k.count, tool}]
			if tool == k.tool || len(o) == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f×", cpu/med(o, func(m Measurement) float64 { return m.CPUPerUS }))
		}
		smokeKey := key{k.mode, k.targets, k.count, "smokeping"}
		vsSmoke := "–"
		if o := groups[smokeKey]; len(o) > 0 && k.tool != "smokeping" {
			vsSmoke = fmt.Sprintf("%.2f× (CPU %%: %.2f×)", cpu/med(o, func(m Measurement) float64 { return m.CPUPerUS }),
				med(ms, func(m Measurement) float64 { return m.CPUPct })/med(o, func(m Measurement) float64 { return m.CPUPct }))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %d | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f B | %s | %s |\n",
			k.mode, k.targets, k.count, ms[0].Interval, k.tool, len(ms), cpu,
			med(ms, func(m Measurement) float64 { return m.CPUPct }),
			med(ms, func(m Measurement) float64 { return float64(m.Pings) }),
			med(ms, func(m Measurement) float64 { return float64(m.Lost) }),
			med(ms, func(m Measurement) float64 { return float64(m.RSSBytes) / (1 << 20) }),
			med(ms, func(m Measurement) float64 { return m.RSSPerT }),
			ratio("fping"), vsSmoke)
	}
	return nil
}
