package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/exposition"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// dataset is one synthetic fleet.
type dataset struct {
	name    string
	hosts   int
	withSSH bool
	// target is the wall time a plain scrape must stay within.
	target time.Duration
}

// handlerPath is one way of serving /metrics.
type handlerPath struct {
	name string
	// build returns the /metrics handler for store.
	build func(store *collector.Store) http.Handler
}

// format is one exposition format and the Accept header that asks for it.
type format struct {
	name, accept string
	want         expfmt.FormatType
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("scrape", "Scrape benchmark of fleet_exporter's /metrics (loopback only).")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	runs := app.Flag("runs", "Scrapes per configuration (the median is reported).").Default("5").Int()
	out := app.Flag("out", "Markdown file the results are appended to; empty for none.").Default("BENCHMARKS.md").String()
	small := app.Flag("hosts.ssh", "Hosts of the ICMP+SSH fleet.").Default("10000").Int()
	large := app.Flag("hosts.icmp", "Hosts of the ICMP-only fleet.").Default("100000").Int()
	smallTarget := app.Flag("target.ssh", "Target: plain scrape of the ICMP+SSH fleet.").Default("150ms").Duration()
	largeTarget := app.Flag("target.icmp", "Target: plain scrape of the ICMP-only fleet.").Default("1.5s").Duration()
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(stderr, "scrape: %v\n", err)
		return 2
	}
	if *runs < 1 {
		fmt.Fprintln(stderr, "scrape: --runs must be at least 1")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start, machine := time.Now(), benchenv.DescribeMachine()
	sets := []dataset{
		{fmt.Sprintf("%d hosts ICMP+SSH (1 command)", *small), *small, true, *smallTarget},
		{fmt.Sprintf("%d hosts ICMP only", *large), *large, false, *largeTarget},
	}
	paths := []handlerPath{
		{"registry (promhttp + NewCollector)", registryHandler},
		{"transactional (promhttp + Gatherer)", transactionalHandler},
		{"handler (exposition.Handler)", daemonHandler},
	}
	formats := []format{
		{"text 0.0.4", "text/plain;version=0.0.4", expfmt.TypeTextPlain},
		{"OpenMetrics 1.0", "application/openmetrics-text;version=1.0.0", expfmt.TypeOpenMetrics},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", expfmt.TypeProtoDelim},
	}
	tb := benchenv.NewTable("fleet", "handler", "format", "encoding", "body bytes", "scrape ms", "CPU ms/scrape", "target", "result")
	checks := benchenv.NewTable("check", "value")
	for _, ds := range sets {
		store := syntheticStore(ds.hosts, ds.withSSH)
		for _, f := range formats {
			plain := map[string]float64{}
			for _, p := range paths {
				for _, gz := range []bool{false, true} {
					if ctx.Err() != nil {
						return 1
					}
					m, err := measure(ctx, p.build(store), f, gz, *runs)
					if err != nil {
						fmt.Fprintf(stderr, "scrape: %s, %s, %s: %v\n", ds.name, p.name, f.name, err)
						return 1
					}
					enc := "plain"
					if gz {
						enc = "gzip"
					} else {
						plain[p.name] = m.wall
					}
					// Prometheus asks for gzip, so the target holds for both.
					verdict := benchenv.Verdict(time.Duration(m.wall*float64(time.Millisecond)) <= ds.target)
					fmt.Fprintf(stdout, "%s | %s | %s | %s: %.1f ms, %d bytes, cpu %.1f ms, load %s\n",
						ds.name, p.name, f.name, enc, m.wall, m.bytes, m.cpu, benchenv.LoadAvg())
					tb.Row(ds.name, p.name, f.name, enc, m.bytes, fmt.Sprintf("%.1f", m.wall), fmt.Sprintf("%.1f", m.cpu),
						fmt.Sprintf("≤ %.0f ms", ms(ds.target)), verdict)
				}
			}
			last := paths[len(paths)-1].name
			for _, p := range paths[:len(paths)-1] {
				checks.Row(fmt.Sprintf("%s, %s: plain scrape %s ÷ handler", ds.name, f.name, p.name),
					fmt.Sprintf("%.1fx", plain[p.name]/plain[last]))
			}
		}
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Synthetic results in a collector.Store (10 sets, 2 static labels, a tenth of the ICMP targets "+
		"failing), served over HTTP on 127.0.0.1 and read in full by a Go client; median of %d scrapes after one "+
		"unmeasured warm-up. Every road serves a registry with the Go and process collectors; the registry road adds "+
		"NewCollector to it and serves it with promhttp.HandlerFor (OpenMetrics enabled), the transactional road is "+
		"exposition.NewTransactionalHandler (promhttp.HandlerForTransactional over the registry merged with a "+
		"collector.Gatherer), and the handler is exposition.NewHandler as the daemon serves it (text formats by "+
		"collector.TextWriter, protobuf by expfmt from the Gatherer, gzip.BestSpeed). promhttp's gzip uses the "+
		"default level. CPU is RUSAGE_SELF per scrape and includes the client's reading (and gunzipping is not "+
		"done: the body is counted as sent).\n\n", *runs)
	body.WriteString(tb.Markdown())
	body.WriteString("\n")
	body.WriteString(checks.Markdown())
	s := benchenv.Section{
		Title: "Scenario 5: /metrics scrape time and size", Start: start, Machine: machine, LoadEnd: benchenv.LoadAvg(),
		Command: "go run ./bench/scrape " + strings.Join(args, " "), Body: body.String(),
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, s.Markdown())
	if err := s.Append(*out); err != nil {
		fmt.Fprintf(stderr, "scrape: %v\n", err)
		return 1
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// selfRegistry returns a registry with the exporter's process-level
// collectors (the ones --web.disable-exporter-metrics leaves out).
func selfRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// registryHandler serves store through a registry, the way http.go did
// before the fast path: promhttp.HandlerFor wrapped by
// InstrumentMetricHandler.
func registryHandler(store *collector.Store) http.Handler {
	reg := selfRegistry()
	reg.MustRegister(collector.NewCollector(store))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 40,
		Registry:            reg,
		EnableOpenMetrics:   true,
		OfferedCompressions: []promhttp.Compression{promhttp.Identity, promhttp.Gzip},
	})
	return promhttp.InstrumentMetricHandler(reg, h)
}

// transactionalHandler serves store through
// exposition.NewTransactionalHandler.
func transactionalHandler(store *collector.Store) http.Handler {
	reg := selfRegistry()
	h := exposition.NewTransactionalHandler(exposition.Options{Registry: reg, Snapshot: store.Snapshot, MaxRequestsInFlight: 40})
	return promhttp.InstrumentMetricHandler(reg, h)
}

// daemonHandler serves store as the daemon does.
func daemonHandler(store *collector.Store) http.Handler {
	reg := selfRegistry()
	h, err := exposition.NewHandler(exposition.Options{Registry: reg, Snapshot: store.Snapshot, MaxRequestsInFlight: 40})
	if err != nil {
		// A fresh registry has no clashing collector.
		panic(err)
	}
	return promhttp.InstrumentMetricHandler(reg, h)
}

// measurement is the median of several scrapes.
type measurement struct {
	wall, cpu float64 // milliseconds
	bytes     int64
}

// measure serves h on a loopback listener and scrapes it runs times after
// one warm-up.
func measure(ctx context.Context, h http.Handler, f format, gz bool, runs int) (measurement, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return measurement{}, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	defer func() {
		_ = srv.Close()
		<-served
	}()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	url := "http://" + l.Addr().String() + "/metrics"

	scrape := func() (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Accept", f.accept)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %s", resp.Status)
		}
		if gz != (resp.Header.Get("Content-Encoding") == "gzip") {
			return 0, fmt.Errorf("asked gzip=%v, got Content-Encoding %q", gz, resp.Header.Get("Content-Encoding"))
		}
		if got := expfmt.ResponseFormat(resp.Header).FormatType(); got != f.want {
			return 0, fmt.Errorf("asked for %s, got Content-Type %q", f.name, resp.Header.Get("Content-Type"))
		}
		return io.Copy(io.Discard, resp.Body)
	}
	if _, err := scrape(); err != nil {
		return measurement{}, err
	}
	var walls, cpus []float64
	var m measurement
	for range runs {
		benchenv.Settle()
		c0, t0 := benchenv.CPUSelf(), time.Now()
		n, err := scrape()
		if err != nil {
			return measurement{}, err
		}
		walls = append(walls, ms(time.Since(t0)))
		cpus = append(cpus, ms(benchenv.CPUSelf()-c0))
		m.bytes = n
	}
	m.wall, m.cpu = benchenv.Median(walls), benchenv.Median(cpus)
	return m, nil
}

// syntheticStore returns a store with hosts hosts in 10 sets, each with an
// ICMP result (a tenth failing) and, with withSSH, an SSH target running one
// command.
func syntheticStore(hosts int, withSSH bool) *collector.Store {
	now := time.Now()
	targets := make([]*config.Target, 0, hosts*2)
	results := make([]probe.Result, 0, hosts*2)
	icmp := &config.ICMPProbe{Count: 3}
	sshCfg := &config.SSHProbe{Commands: []config.Command{{Name: "uname", Run: "uname -a"}}}
	labels := make([]map[string]string, 30)
	for i := range labels {
		labels[i] = map[string]string{"dc": fmt.Sprintf("dc%d", i%3), "team": "net"}
	}
	for i := range hosts {
		set := fmt.Sprintf("set%02d", i%10)
		host := fmt.Sprintf("host%06d.example.net", i)
		t := &config.Target{
			Set: set, Host: host, Name: host, Probe: config.ProbeICMP,
			Interval: time.Minute, Timeout: 10 * time.Second, Labels: labels[i%30], ICMP: icmp,
		}
		targets = append(targets, t)
		r := probe.Result{
			Key: t.Key(), Due: now, Start: now, Duration: time.Millisecond, Success: true,
			ICMP: &probe.ICMPResult{Sent: 3, Received: 3, RTT: 300 * time.Microsecond},
		}
		if i%10 == 0 {
			r.Success, r.Reason, r.ICMP = false, probe.ReasonTimeout, &probe.ICMPResult{Sent: 3}
		}
		results = append(results, r)
		if withSSH {
			st := &config.Target{
				Set: set, Host: host, Name: host, Probe: config.ProbeSSH,
				Interval: time.Minute, Timeout: 10 * time.Second, Labels: labels[i%30], SSH: sshCfg,
			}
			targets = append(targets, st)
			results = append(results, probe.Result{
				Key: st.Key(), Due: now, Start: now, Duration: 8 * time.Millisecond, Success: true,
				SSH: &probe.SSHResult{
					Connect: time.Millisecond, Handshake: 3 * time.Millisecond, Auth: 2 * time.Millisecond, NewConnection: true,
					Commands: []probe.CommandResult{{Name: "uname", Ran: true, Duration: 2 * time.Millisecond, Hash: uint64(i%5 + 1), Bytes: 40}},
				},
			})
		}
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	for _, r := range results {
		s.Update(r)
	}
	return s
}
