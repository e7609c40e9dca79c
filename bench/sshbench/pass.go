package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
	sshprober "github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/schedule"
)

// passResult is what one pass over a fleet measured.
type passResult struct {
	n        int
	wall     time.Duration
	cpu      time.Duration // client CPU (RUSAGE_SELF, or children for pdsh)
	server   time.Duration // server CPU (fleetsim or sshd tree)
	ok, fail int
	reasons  map[string]int
}

func (r passResult) hostsPerSec() float64 { return float64(r.n) / r.wall.Seconds() }

// cpuPerHost returns the client CPU per host in milliseconds.
func (r passResult) cpuPerHost() float64 { return ms(r.cpu) / float64(r.n) }

// serverPerHost returns the server CPU per host in milliseconds.
func (r passResult) serverPerHost() float64 { return ms(r.server) / float64(r.n) }

func (r passResult) failures() string {
	if r.fail == 0 {
		return "0"
	}
	keys := slices.Sorted(maps.Keys(r.reasons))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, r.reasons[k]))
	}
	return fmt.Sprintf("%d (%s)", r.fail, strings.Join(parts, " "))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sinkCounter counts pool results.
type sinkCounter struct {
	ok, fail atomic.Int64
	// mu guards reasons.
	mu      sync.Mutex
	reasons map[string]int
}

func newSinkCounter() *sinkCounter { return &sinkCounter{reasons: map[string]int{}} }

func (s *sinkCounter) sink(r probe.Result) {
	if r.Success {
		s.ok.Add(1)
		return
	}
	s.fail.Add(1)
	s.mu.Lock()
	s.reasons[string(r.Reason)]++
	s.mu.Unlock()
}

func (s *sinkCounter) result(n int) passResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return passResult{n: n, ok: int(s.ok.Load()), fail: int(s.fail.Load()), reasons: maps.Clone(s.reasons)}
}

// ourClient is the exporter's SSH path: schedule.NewPool with only the SSH
// prober, driven by a schedule.OneShot per round as --once drives it.
type ourClient struct {
	ssh  *sshprober.Prober
	pool *schedule.Pool
	cnt  *sinkCounter
	// round is the one-shot of the round in progress.
	round atomic.Pointer[schedule.OneShot]
}

func newOurClient(concurrency int) (*ourClient, error) {
	c := &ourClient{ssh: sshprober.NewProber(dns.New(dns.Options{}), nil), cnt: newSinkCounter()}
	g := config.Global{
		Concurrency: concurrency,
		Limits:      config.ProbeLimits{SSH: config.Limit{Concurrency: concurrency}},
	}
	sink := func(r probe.Result) {
		c.cnt.sink(r)
		if o := c.round.Load(); o != nil {
			o.Observe(r)
		}
	}
	pool, err := schedule.NewPool(g, map[string]probe.Prober{config.ProbeSSH: c.ssh}, sink, nil, nil)
	if err != nil {
		return nil, err
	}
	c.pool = pool
	return c, nil
}

// round runs every target once through the pool and measures it.
func (c *ourClient) runRound(ctx context.Context, targets []*config.Target, server func() time.Duration) passResult {
	c.cnt.ok.Store(0)
	c.cnt.fail.Store(0)
	c.cnt.mu.Lock()
	clear(c.cnt.reasons)
	c.cnt.mu.Unlock()
	o := schedule.NewOneShot(targets)
	c.round.Store(o)
	poolCtx, stopPool := context.WithCancel(ctx)
	poolDone := make(chan error, 1)
	s0, cpu0, t0 := server(), benchenv.CPUSelf(), time.Now()
	go func() { poolDone <- c.pool.Run(poolCtx) }()
	_ = o.Run(ctx, c.pool.Submit)
	stopPool()
	if err := <-poolDone; err != nil {
		panic(err) // a fresh pool per round cannot be running already
	}
	wall, cpu, srv := time.Since(t0), benchenv.CPUSelf()-cpu0, server()-s0
	r := c.cnt.result(len(targets))
	r.wall, r.cpu, r.server = wall, cpu, srv
	return r
}

func (c *ourClient) close() { c.ssh.Close() }

// minimalClient is the baseline: the least an x/crypto/ssh client must do
// to run one command: dial, handshake with an exact host key check, public
// key auth, one session, hash stdout, close.
type minimalClient struct {
	user    string
	auth    []ssh.AuthMethod
	keys    map[string][]byte // knownhosts.Normalize(host:port) -> marshalled key
	timeout time.Duration
	conc    int
}

func newMinimalClient(user, keyFile, knownHostsFile string, conc int) (*minimalClient, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, err
	}
	kh, err := os.ReadFile(knownHostsFile)
	if err != nil {
		return nil, err
	}
	keys := map[string][]byte{}
	for rest := kh; len(rest) > 0; {
		var hosts []string
		var key ssh.PublicKey
		_, hosts, key, _, rest, err = ssh.ParseKnownHosts(rest)
		if err != nil {
			break // io.EOF at the end
		}
		for _, h := range hosts {
			keys[h] = key.Marshal()
		}
	}
	return &minimalClient{
		user: user, auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, keys: keys,
		timeout: 10 * time.Second, conc: conc,
	}, nil
}

func (m *minimalClient) config() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User: m.user,
		Auth: m.auth,
		HostKeyCallback: func(hostname string, _ net.Addr, key ssh.PublicKey) error {
			if want, ok := m.keys[knownhosts.Normalize(hostname)]; ok && bytes.Equal(want, key.Marshal()) {
				return nil
			}
			return errors.New("host key mismatch")
		},
		Timeout: m.timeout,
	}
}

// dial opens and authenticates one connection.
func (m *minimalClient) dial(addr string) (*ssh.Client, error) {
	nc, err := net.DialTimeout("tcp", addr, m.timeout)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(m.timeout))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, m.config())
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// runCommand runs cmd in a new session on c and hashes its output.
func runCommand(c *ssh.Client, cmd string) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	out, err := s.Output(cmd)
	_ = sha256.Sum256(out)
	return err
}

// each runs f for every index with m.conc workers.
func (m *minimalClient) each(ctx context.Context, n int, f func(i int) error) (ok, fail int, reasons map[string]int) {
	var okN, failN atomic.Int64
	var mu sync.Mutex
	reasons = map[string]int{}
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(m.conc, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					failN.Add(1)
					mu.Lock()
					reasons[errClass(err)]++
					mu.Unlock()
					continue
				}
				okN.Add(1)
			}
		})
	}
	wg.Wait()
	return int(okN.Load()), int(failN.Load()), reasons
}

// errClass shortens an error for the failure column.
func errClass(err error) string {
	s := err.Error()
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.ReplaceAll(s, " ", "_")
}

// fresh runs one fresh-connection pass over addrs.
func (m *minimalClient) fresh(ctx context.Context, addrs []string, cmd string, server func() time.Duration) passResult {
	s0, cpu0, t0 := server(), benchenv.CPUSelf(), time.Now()
	ok, fail, reasons := m.each(ctx, len(addrs), func(i int) error {
		c, err := m.dial(addrs[i])
		if err != nil {
			return err
		}
		defer c.Close()
		return runCommand(c, cmd)
	})
	return passResult{
		n: len(addrs), wall: time.Since(t0), cpu: benchenv.CPUSelf() - cpu0, server: server() - s0,
		ok: ok, fail: fail, reasons: reasons,
	}
}

// targetAddrs returns host:port of every SSH target.
func targetAddrs(targets []*config.Target) []string {
	addrs := make([]string, len(targets))
	for i, t := range targets {
		port := t.Port
		if port == 0 {
			port = t.SSH.Port
		}
		addrs[i] = net.JoinHostPort(t.Name, fmt.Sprint(port))
	}
	return addrs
}

// loadTargets loads a fleet.yml and returns its targets.
func loadTargets(path string) ([]*config.Target, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	targets, _, err := cfg.Targets()
	return targets, err
}
