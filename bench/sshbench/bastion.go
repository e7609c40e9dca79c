package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/prober/ssh/bastion"
)

// bastionOptions configure scenario 7.
type bastionOptions struct {
	common
	fleetsim    string
	hosts       int
	base        string
	port        int
	concurrency int
	sshd        string
	addr        string // the bastion's listen address
	maxStartups string
	connections int
	reuse       bool
	pdsh        string
	peerHosts   int
	peerFanout  []int
}

// peerRow is the OpenSSH peer's passes at one pdsh fan-out and the logins
// the bastion logged in each.
type peerRow struct {
	fanout int
	runs   []passResult
	logins []int
}

// bastionPass is one measured pass of one mode.
type bastionPass struct {
	passResult               // server is the bastion sshd's CPU
	fleetsim   time.Duration // fleetsim's CPU
	logins     int           // "Accepted publickey" lines the bastion logged during the pass
	connects   uint64        // the bastion's Stats().Connects[success] at the end of the pass
}

// bastionMode is one way of reaching the fleet and its measured passes.
type bastionMode struct {
	name    string
	targets []*config.Target
	via     bool // through the bastion
	reuse   bool
	runs    []bastionPass
	// connectLogins is, with reuse, the logins of the unmeasured rounds
	// that connected every host before each measured pass.
	connectLogins []int
}

func (m *bastionMode) median(get func(bastionPass) float64) float64 {
	xs := make([]float64, len(m.runs))
	for i, r := range m.runs {
		xs[i] = get(r)
	}
	return benchenv.Median(xs)
}

// bastionEnv is the fleet, the bastion sshd and the hop that reaches it.
type bastionEnv struct {
	dir string
	fs  *benchenv.Fleet
	srv *sshdtest.Server
	hop config.ProxyJump
	// key and knownHosts are the bastion login's client key and the
	// bastion's known_hosts file, for the OpenSSH peer.
	key, knownHosts string
}

// sshdCPU returns the CPU the bastion sshd and its connection processes used.
func (e *bastionEnv) sshdCPU() time.Duration {
	d, err := benchenv.TreeCPU(e.srv.PID())
	if err != nil {
		return 0
	}
	return d
}

// waitIdle waits until the bastion listener has no connection processes
// left (a closed client's are torn down a little after it closed), for at
// most five seconds, so that their last CPU is not counted in the next
// pass.
func (e *bastionEnv) waitIdle() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && hasChildren(e.srv.PID()) {
		time.Sleep(20 * time.Millisecond)
	}
}

// hasChildren reports whether a live process has parent pid.
func hasChildren(pid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if st, err := benchenv.ReadProcStat(n); err == nil && st.PPID == pid {
			return true
		}
	}
	return false
}

// logins counts the public-key logins in the bastion's log so far.
func (e *bastionEnv) logins() int {
	b, err := os.ReadFile(e.srv.LogFile)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("Accepted publickey"))
}

// loginsSince waits until the bastion has logged at least want logins
// after base (sshd writes its log from the connection processes, a little
// after the client sees the login), for at most two seconds, and returns
// how many it logged.
func (e *bastionEnv) loginsSince(base, want int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := e.logins() - base
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runBastion is scenario 7: the same fleetsim hosts, a fresh connection
// per probe, directly and through one OpenSSH sshd bastion (and, with
// --reuse, on persistent connections through it), plus OpenSSH's own
// ProxyJump on a sample.
func runBastion(ctx context.Context, o bastionOptions, stdout io.Writer) error {
	if o.hosts < 1 {
		return errors.New("--hosts must be at least 1")
	}
	start, machine := time.Now(), benchenv.DescribeMachine()
	dir, err := os.MkdirTemp(o.tmp, "bastion-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env, err := startBastionEnv(ctx, o, dir)
	if err != nil {
		return err
	}
	defer env.stop()

	targets, err := loadTargets(filepath.Join(dir, "fleet.yml"))
	if err != nil {
		return err
	}
	modes := []*bastionMode{
		{name: "direct", targets: targets},
		{name: "via bastion", targets: withSSH(targets, func(p *config.SSHProbe) { p.ProxyJump = []config.ProxyJump{env.hop} }), via: true},
	}
	if o.reuse {
		modes = append(modes, &bastionMode{
			name: "via bastion, reuse_connections", via: true, reuse: true,
			targets: withSSH(targets, func(p *config.SSHProbe) {
				p.ProxyJump = []config.ProxyJump{env.hop}
				p.ReuseConnections = true
			}),
		})
	}

	// Unmeasured warm-up, one fresh pass each way: fleetsim builds its host
	// keys lazily and the first sshd fork pages its binary in.
	for _, m := range modes[:2] {
		if _, err := o.bastionPass(ctx, env, m, nil); err != nil {
			return fmt.Errorf("warm-up %s: %w", m.name, err)
		}
	}
	for i := range o.runs {
		for k := range modes {
			// Rotate which mode goes first, so no mode always follows the
			// same one.
			m := modes[(i+k)%len(modes)]
			r, err := o.bastionPass(ctx, env, m, stdout)
			if err != nil {
				return err
			}
			m.runs = append(m.runs, r)
			fmt.Fprintf(stdout, "bastion run=%d %-31s wall=%.2fs cpu/probe=%.3fms bastion-sshd=%.0fms logins=%d connects=%d fleetsim/probe=%.3fms ok=%d failed=%s load=%s\n",
				i+1, m.name, r.wall.Seconds(), r.cpuPerHost(), ms(r.server), r.logins, r.connects,
				ms(r.fleetsim)/float64(r.n), r.ok, r.failures(), benchenv.LoadAvg())
		}
	}

	var peer []peerRow
	var peerNote string
	switch {
	case o.peerHosts <= 0:
		peerNote = "The OpenSSH ProxyJump peer was not run (--peer-hosts 0)."
	case !executable("ssh") || !executable(o.pdsh):
		// pdsh -R ssh runs the ssh found in PATH.
		peerNote = fmt.Sprintf("The OpenSSH ProxyJump peer was skipped: ssh (in PATH) or %s is missing.", o.pdsh)
	default:
		for _, f := range o.peerFanout {
			row, err := env.peerPasses(ctx, o, targets, f, stdout)
			if err != nil {
				return fmt.Errorf("ssh -J peer: %w", err)
			}
			peer = append(peer, row)
		}
	}
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 7: SSH through a bastion (proxy_jump) vs direct", Start: start, Machine: machine,
		Body: bastionBody(o, env, modes, peer, peerNote),
	})
}

// bastionPass measures one pass of mode m with a new client. With reuse it
// first connects every host in an unmeasured round on the same client.
// stdout, when not nil, gets a line about that round.
func (o bastionOptions) bastionPass(ctx context.Context, env *bastionEnv, m *bastionMode, stdout io.Writer) (bastionPass, error) {
	env.waitIdle()
	benchenv.Settle()
	oc, err := newOurClient(o.concurrency)
	if err != nil {
		return bastionPass{}, err
	}
	defer oc.close()
	lim := config.Limit{Concurrency: o.concurrency}
	if m.reuse {
		// Every live connection holds its channel on the bastion.
		lim.Concurrency = len(m.targets) + o.concurrency
	}
	oc.ssh.SetBastionLimits(lim)
	if m.reuse {
		l0 := env.logins()
		pctx, cancel := context.WithTimeout(ctx, o.passLimit)
		r := oc.runRound(pctx, m.targets, env.sshdCPU)
		cancel()
		if err := ctx.Err(); err != nil {
			return bastionPass{}, err
		}
		logins := env.loginsSince(l0, int(bastionConnects(oc)))
		if stdout != nil {
			m.connectLogins = append(m.connectLogins, logins)
			fmt.Fprintf(stdout, "bastion %s: connect round wall=%.2fs logins=%d ok=%d failed=%s\n",
				m.name, r.wall.Seconds(), logins, r.ok, r.failures())
		}
		benchenv.Settle()
	}
	l0, f0 := env.logins(), env.fs.CPU()
	pctx, cancel := context.WithTimeout(ctx, o.passLimit)
	r := bastionPass{passResult: oc.runRound(pctx, m.targets, env.sshdCPU)}
	cancel()
	r.fleetsim = env.fs.CPU() - f0
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.connects = bastionConnects(oc)
	want := 0
	if m.via && !m.reuse {
		want = int(r.connects)
	}
	r.logins = env.loginsSince(l0, want)
	return r, nil
}

// bastionConnects returns the successful bastion connections of c's prober.
func bastionConnects(c *ourClient) uint64 {
	var n uint64
	for _, b := range c.ssh.Bastions() {
		n += b.Connects[bastion.ResultSuccess]
	}
	return n
}

// withSSH returns copies of targets sharing one copy of the first target's
// ssh block, changed by edit.
func withSSH(targets []*config.Target, edit func(*config.SSHProbe)) []*config.Target {
	p := *targets[0].SSH
	edit(&p)
	out := make([]*config.Target, len(targets))
	for i, t := range targets {
		c := *t
		c.SSH = &p
		out[i] = &c
	}
	return out
}

// startBastionEnv generates and serves the fleet and starts the bastion
// sshd with a login key of its own.
func startBastionEnv(ctx context.Context, o bastionOptions, dir string) (*bastionEnv, error) {
	env := &bastionEnv{dir: dir}
	ok := false
	defer func() {
		if !ok {
			env.stop()
		}
	}()
	if err := benchenv.FleetGen(ctx, o.fleetsim, dir, o.hosts, o.base, o.port, false); err != nil {
		return nil, err
	}
	workers := 1
	if o.hosts > 5000 {
		workers = 2 // fd limit, as in scenario 1
	}
	fs, err := benchenv.FleetServe(ctx, o.fleetsim, dir, o.hosts, o.base, o.port, workers)
	if err != nil {
		return nil, err
	}
	env.fs = fs
	sdir := filepath.Join(dir, "bastion")
	if err := os.Mkdir(sdir, 0o755); err != nil {
		return nil, err
	}
	env.srv, err = sshdtest.Launch(ctx, sshdtest.Options{
		Addr: o.addr, SSHD: o.sshd, Dir: sdir, HostKeyTypes: []string{sshdtest.KeyEd25519},
		AllowTCPForwarding: true,
		// VERBOSE logs every login, which is what is counted; MaxStartups
		// as a stock sshd has it, so a login per target would queue.
		LogLevel: "VERBOSE", MaxStartups: o.maxStartups,
	})
	if err != nil {
		return nil, err
	}
	key, err := sshdtest.NewKey(ctx, sdir, "id_bastion", sshdtest.KeyEd25519, "")
	if err != nil {
		return nil, err
	}
	if err := env.srv.AddAuthorizedKey(key); err != nil {
		return nil, err
	}
	env.key = key.Private
	env.knownHosts = filepath.Join(sdir, "bastion_known_hosts")
	if err := env.srv.WriteKnownHosts(env.knownHosts, sshdtest.KnownHostsPlain, []string{env.srv.KnownHostsPattern()}); err != nil {
		return nil, err
	}
	env.hop = config.ProxyJump{
		Host: env.srv.HostPort(), User: env.srv.User, PrivateKeyFile: env.key, KnownHostsFile: env.knownHosts,
		HostKeyPolicy: config.HostKeyPolicyStrict, Connections: o.connections,
	}
	ok = true
	return env, nil
}

// stop stops sshd and fleetsim (by the PIDs they were started with).
func (e *bastionEnv) stop() {
	if e.srv != nil {
		_ = e.srv.Close()
	}
	if e.fs != nil {
		e.fs.Stop()
	}
}

// peerPasses runs pdsh -R ssh with OpenSSH's ProxyJump (from an ssh_config
// of its own) with fan-out fanout over the first o.peerHosts hosts, o.runs
// times.
func (e *bastionEnv) peerPasses(ctx context.Context, o bastionOptions, targets []*config.Target, fanout int, stdout io.Writer) (peerRow, error) {
	n := min(o.peerHosts, len(targets))
	t := targets[0].SSH
	var hosts bytes.Buffer
	for _, tg := range targets[:n] {
		fmt.Fprintln(&hosts, tg.Name)
	}
	hostsFile := filepath.Join(e.dir, "peer_hosts")
	if err := os.WriteFile(hostsFile, hosts.Bytes(), 0o600); err != nil {
		return peerRow{}, err
	}
	// ssh passes -F on to the ssh it starts for the jump, so both logins
	// read this file.
	cfg := fmt.Sprintf("Host bastion\n  ProxyJump none\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  UserKnownHostsFile %s\n\n"+
		"Host *\n  ProxyJump bastion\n  Port %d\n  IdentityFile %s\n  UserKnownHostsFile %s\n"+
		"  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  IdentitiesOnly yes\n  LogLevel ERROR\n",
		e.srv.Addr, e.srv.Port, e.srv.User, e.key, e.knownHosts, o.port, t.PrivateKeyFile, t.KnownHostsFile)
	cfgFile := filepath.Join(e.dir, "peer_ssh_config")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return peerRow{}, err
	}
	run := pdshRun{
		bin: o.pdsh, fanout: fanout, user: t.User, hostsFile: hostsFile, n: n,
		remote: t.Commands[0].Run, sshArgs: []string{"-F", cfgFile}, server: e.sshdCPU,
	}
	row := peerRow{fanout: fanout}
	for i := range o.runs {
		e.waitIdle()
		benchenv.Settle()
		l0 := e.logins()
		pctx, cancel := context.WithTimeout(ctx, o.passLimit)
		r, err := run.pass(pctx)
		cancel()
		if err != nil {
			return row, err
		}
		l := e.loginsSince(l0, n)
		row.runs, row.logins = append(row.runs, r), append(row.logins, l)
		fmt.Fprintf(stdout, "bastion run=%d ssh -J (pdsh -f %d, %d hosts) wall=%.2fs cpu/host=%.3fms bastion-sshd=%.0fms logins=%d ok=%d failed=%s load=%s\n",
			i+1, fanout, n, r.wall.Seconds(), r.cpuPerHost(), ms(r.server), l, r.ok, r.failures(), benchenv.LoadAvg())
	}
	return row, nil
}

// executable reports whether path names a file that can be run.
func executable(path string) bool {
	_, err := exec.LookPath(path)
	return err == nil
}

// bastionBody renders the section's text and tables.
func bastionBody(o bastionOptions, env *bastionEnv, modes []*bastionMode, peer []peerRow, peerNote string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d fleetsim hosts (%s upwards, port %d, its own process) probed with one command (`%s`), "+
		"concurrency %d, a new client per pass; directly, and through one OpenSSH sshd bastion on %s "+
		"(`AllowTcpForwarding yes`, `LogLevel VERBOSE`, `MaxStartups %s`) with proxy_jump connections %d. "+
		"Behind the bastion every probe is a direct-tcpip channel on one of those connections and a fresh SSH "+
		"connection to the target inside it. Client CPU is getrusage(RUSAGE_SELF) of the bench process; "+
		"bastion sshd CPU is its process tree (listener, connection processes, reaped children), read from /proc; "+
		"bastion logins are the `Accepted publickey` lines sshd logged during the pass, next to the prober's "+
		"successful bastion connections (`Stats().Connects[success]`).",
		o.hosts, o.base, o.port, modes[0].targets[0].SSH.Commands[0].Run, o.concurrency, env.srv.HostPort(),
		o.maxStartups, max(o.connections, config.DefaultBastionConnections))
	if o.reuse {
		b.WriteString(" The reuse_connections row is a pass on live connections: each run first connects every " +
			"host through the bastion in an unmeasured round on the same client (its logins are shown in brackets).")
	}
	fmt.Fprintf(&b, " Medians of %d runs, modes in rotating order.\n\n", o.runs)

	tb := benchenv.NewTable("mode", "wall s/pass", "hosts/s", "client CPU ms/probe", "bastion logins/pass (log / connects)",
		"bastion sshd CPU ms/pass", "bastion sshd CPU ms/probe", "fleetsim CPU ms/probe", "failed (all runs)")
	valid := true
	for _, m := range modes {
		fails := failuresOf(m.runs)
		if fails != "0" {
			valid = false
		}
		logins := "–"
		if m.via {
			logins = fmt.Sprintf("%.0f / %.0f",
				m.median(func(r bastionPass) float64 { return float64(r.logins) }),
				m.median(func(r bastionPass) float64 { return float64(r.connects) }))
			if m.reuse {
				logins += fmt.Sprintf(" (%s at connect)", intsString(m.connectLogins))
			}
		}
		sshd := "–"
		sshdProbe := "–"
		if m.via {
			sshd = fmt.Sprintf("%.0f", m.median(func(r bastionPass) float64 { return ms(r.server) }))
			sshdProbe = fmt.Sprintf("%.3f", m.median(func(r bastionPass) float64 { return r.serverPerHost() }))
		}
		tb.Row(m.name,
			fmt.Sprintf("%.2f", m.median(func(r bastionPass) float64 { return r.wall.Seconds() })),
			fmt.Sprintf("%.0f", m.median(func(r bastionPass) float64 { return r.hostsPerSec() })),
			fmt.Sprintf("%.3f", m.median(func(r bastionPass) float64 { return r.cpuPerHost() })),
			logins, sshd, sshdProbe,
			fmt.Sprintf("%.3f", m.median(func(r bastionPass) float64 { return ms(r.fleetsim) / float64(r.n) })),
			fails)
	}
	b.WriteString(tb.Markdown())

	direct, via := modes[0], modes[1]
	ratio := func(get func(bastionPass) float64) float64 {
		xs := make([]float64, len(via.runs))
		for i := range via.runs {
			xs[i] = get(via.runs[i]) / get(direct.runs[i])
		}
		return benchenv.Median(xs)
	}
	fmt.Fprintf(&b, "\nPer run, bastion ÷ direct (median): wall %.2fx, client CPU per probe %.2fx.",
		ratio(func(r bastionPass) float64 { return float64(r.wall) }),
		ratio(func(r bastionPass) float64 { return float64(r.cpu) }))
	b.WriteString("\n\n")
	conns := max(o.connections, config.DefaultBastionConnections)
	checks := benchenv.NewTable("check", "value", "target", "result")
	failed := "0"
	if !valid {
		failed = "some (see the table)"
	}
	checks.Row("probes failed, every mode and run", failed, "0", benchenv.Verdict(valid))
	maxLogins := 0
	for _, r := range via.runs {
		maxLogins = max(maxLogins, r.logins)
	}
	checks.Row(fmt.Sprintf("bastion logins per fresh pass of %d probes (most of any run)", o.hosts), strconv.Itoa(maxLogins),
		fmt.Sprintf("= %d (proxy_jump connections)", conns), benchenv.Verdict(maxLogins == conns))
	b.WriteString(checks.Markdown())
	if !valid {
		b.WriteString("\n**Not a valid run: some probes failed (reasons in the table).**\n")
	}
	b.WriteString("\n")

	if len(peer) == 0 {
		b.WriteString(peerNote + "\n")
		return b.String()
	}
	fmt.Fprintf(&b, "OpenSSH peer: `pdsh -R ssh` over the first %d hosts with `ProxyJump` to the same bastion "+
		"(ssh_config of its own, `-F`), the same command, key and known_hosts; client CPU is getrusage(RUSAGE_CHILDREN) "+
		"(pdsh, its ssh processes and the jump ssh each of them starts); per-host figures divide by all hosts, failed "+
		"ones included. Medians of %d runs.\n\n", peer[0].runs[0].n, o.runs)
	pt := benchenv.NewTable("client", "hosts", "wall s", "hosts/s", "client CPU ms/host", "bastion logins/pass",
		"bastion sshd CPU ms/host", "failed (all runs)")
	for _, p := range peer {
		med := func(get func(passResult) float64) float64 { return freshRow{runs: p.runs}.median(get) }
		logins := make([]float64, len(p.logins))
		for i, l := range p.logins {
			logins[i] = float64(l)
		}
		pt.Row(fmt.Sprintf("ssh -J via pdsh -f %d", p.fanout), p.runs[0].n,
			fmt.Sprintf("%.2f", med(func(r passResult) float64 { return r.wall.Seconds() })),
			fmt.Sprintf("%.0f", med(passResult.hostsPerSec)),
			fmt.Sprintf("%.3f", med(passResult.cpuPerHost)),
			fmt.Sprintf("%.0f", benchenv.Median(logins)),
			fmt.Sprintf("%.3f", med(passResult.serverPerHost)),
			failuresOfPasses(p.runs))
	}
	b.WriteString(pt.Markdown())
	return b.String()
}

// failuresOf sums the failures of passes by reason.
func failuresOf(runs []bastionPass) string {
	ps := make([]passResult, len(runs))
	for i, r := range runs {
		ps[i] = r.passResult
	}
	return failuresOfPasses(ps)
}

// failuresOfPasses sums the failures of passes by reason.
func failuresOfPasses(runs []passResult) string {
	sum := passResult{reasons: map[string]int{}}
	for _, r := range runs {
		sum.fail += r.fail
		for k, v := range r.reasons {
			sum.reasons[k] += v
		}
	}
	return sum.failures()
}

func intsString(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}
