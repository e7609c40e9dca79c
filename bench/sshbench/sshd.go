package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/config"
)

// sshdOptions configure scenario 2.
type sshdOptions struct {
	common
	sshd, pdsh, nft string
	hosts           int
	port            int
	fanout          int
	remote          string
	user            string
	minSpeedup      float64
	minCPURatio     float64
}

// sshdMaxListen is OpenSSH's MAX_LISTEN_SOCKS: sshd binds only the first 16
// ListenAddress lines and silently ignores the rest.
const sshdMaxListen = 16

// natTable is the nftables table the bench creates (and deletes) to send
// the host addresses sshd cannot listen on to one it does listen on.
const natTable = "fleet_sshbench_nat"

// sshdEnv is one sshd on loopback with its keys and host list.
type sshdEnv struct {
	dir        string
	port       int
	user       string
	key        string
	knownHosts string
	hostsFile  string
	addrs      []string // host addresses, without port
	cmd        *exec.Cmd
	waited     chan struct{}
	nat        bool
	nft        string
}

// runSSHD is scenario 2: ours vs pdsh against one real OpenSSH sshd.
func runSSHD(ctx context.Context, o sshdOptions, stdout io.Writer) error {
	if o.hosts < 1 || o.hosts > 254 {
		return errors.New("--hosts must be between 1 and 254")
	}
	start, machine := time.Now(), benchenv.DescribeMachine()
	env, err := startSSHD(ctx, o)
	if err != nil {
		return err
	}
	defer env.stop()

	targets := env.targets(o.remote)
	var ours, pdsh freshRow
	// Warm-up: one unmeasured pass of each, so page cache and sshd's first
	// re-exec are paid before measuring.
	if _, err := env.pdshPass(ctx, o); err != nil {
		return fmt.Errorf("pdsh warm-up: %w", err)
	}
	for i := range o.runs {
		oursFirst := i%2 == 0
		for _, which := range []bool{oursFirst, !oursFirst} {
			benchenv.Settle()
			pctx, cancel := context.WithTimeout(ctx, o.passLimit)
			var r passResult
			name := "pdsh"
			if which {
				name = "ours"
				oc, err := newOurClient(o.fanout)
				if err != nil {
					cancel()
					return err
				}
				r = oc.runRound(pctx, targets, env.sshdCPU)
				oc.close()
				ours.runs = append(ours.runs, r)
			} else {
				r, err = env.pdshPass(pctx, o)
				if err != nil {
					cancel()
					return err
				}
				pdsh.runs = append(pdsh.runs, r)
			}
			cancel()
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "sshd run=%d %-4s wall=%.2fs hosts/s=%.1f cpu/host=%.3fms sshd/host=%.2fms ok=%d failed=%s load=%s\n",
				i+1, name, r.wall.Seconds(), r.hostsPerSec(), r.cpuPerHost(), r.serverPerHost(), r.ok, r.failures(), benchenv.LoadAvg())
		}
	}

	tb := benchenv.NewTable("client", "wall s", "hosts/s", "client CPU ms/host", "sshd CPU ms/host", "failed (last run)")
	for _, c := range []struct {
		name string
		row  freshRow
	}{{fmt.Sprintf("pdsh -R ssh -f %d", o.fanout), pdsh}, {fmt.Sprintf("fleet_exporter pool+prober (concurrency %d)", o.fanout), ours}} {
		tb.Row(c.name,
			fmt.Sprintf("%.2f", c.row.median(func(r passResult) float64 { return r.wall.Seconds() })),
			fmt.Sprintf("%.1f", c.row.median(passResult.hostsPerSec)),
			fmt.Sprintf("%.3f", c.row.median(passResult.cpuPerHost)),
			fmt.Sprintf("%.2f", c.row.median(passResult.serverPerHost)),
			c.row.runs[len(c.row.runs)-1].failures())
	}
	speed := make([]float64, o.runs)
	cpu := make([]float64, o.runs)
	for i := range o.runs {
		speed[i] = ours.runs[i].hostsPerSec() / pdsh.runs[i].hostsPerSec()
		cpu[i] = pdsh.runs[i].cpuPerHost() / ours.runs[i].cpuPerHost()
	}
	checks := benchenv.NewTable("check", "value", "target", "result")
	sp, cr := benchenv.Median(speed), benchenv.Median(cpu)
	checks.Row("hosts/s ours ÷ pdsh", fmt.Sprintf("%.1fx", sp), fmt.Sprintf("≥ %.0fx", o.minSpeedup), benchenv.Verdict(sp >= o.minSpeedup))
	checks.Row("client CPU/host pdsh ÷ ours", fmt.Sprintf("%.0fx", cr), fmt.Sprintf("≥ %.0fx", o.minCPURatio), benchenv.Verdict(cr >= o.minCPURatio))

	var body strings.Builder
	fmt.Fprintf(&body, "One OpenSSH sshd (`sshd -D -e -f cfg`, key auth, MaxStartups 200:30:400, MaxSessions 100) "+
		"for %d host addresses 127.20.0.1..%d on port %d, command `%s`. sshd binds at most %d ListenAddress lines "+
		"(MAX_LISTEN_SOCKS), so it listens on 127.20.0.1 and an nftables DNAT rule in a table of its own (%s, "+
		"output hook, loopback only, deleted afterwards) maps the other addresses to it; both clients connect to "+
		"the same %d addresses and check host keys against the same known_hosts. pdsh client CPU is "+
		"getrusage(RUSAGE_CHILDREN) (pdsh and its ssh processes); ours is RUSAGE_SELF; sshd CPU includes its reaped "+
		"per-connection processes. Medians of %d runs.\n\n",
		o.hosts, o.hosts, env.port, o.remote, sshdMaxListen, natTable, o.hosts, o.runs)
	body.WriteString(tb.Markdown())
	body.WriteString("\n")
	body.WriteString(checks.Markdown())
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 2: SSH against OpenSSH sshd, fleet_exporter vs pdsh", Start: start, Machine: machine,
		Body: body.String(),
	})
}

// startSSHD writes keys, known_hosts, sshd_config, sets up the DNAT and
// starts sshd; it returns once sshd accepts connections.
func startSSHD(ctx context.Context, o sshdOptions) (*sshdEnv, error) {
	if err := ensureUser(ctx, o.user); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.tmp, "sshd-bench-")
	if err != nil {
		return nil, err
	}
	// sshd reads authorized_keys with the login user's uid.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	env := &sshdEnv{dir: dir, user: o.user, nft: o.nft, port: o.port}
	ok := false
	defer func() {
		if !ok {
			env.stop()
		}
	}()
	if env.port == 0 {
		if env.port, err = freePort("127.20.0.1"); err != nil {
			return nil, err
		}
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	env.key = filepath.Join(dir, "id_ed25519")
	for _, k := range []string{hostKey, env.key} {
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return nil, err
	}
	clientPub, err := os.ReadFile(env.key + ".pub")
	if err != nil {
		return nil, err
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, clientPub, 0o644); err != nil {
		return nil, err
	}
	var kh, hf bytes.Buffer
	for i := 1; i <= o.hosts; i++ {
		a := fmt.Sprintf("127.20.0.%d", i)
		env.addrs = append(env.addrs, a)
		fmt.Fprintf(&kh, "[%s]:%d %s", a, env.port, hostPub)
		fmt.Fprintln(&hf, a)
	}
	env.knownHosts = filepath.Join(dir, "known_hosts")
	env.hostsFile = filepath.Join(dir, "hosts")
	if err := os.WriteFile(env.knownHosts, kh.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(env.hostsFile, hf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(sshdConfig(env.port, hostKey, authKeys, filepath.Join(dir, "sshd.pid"))), 0o600); err != nil {
		return nil, err
	}
	if o.hosts > 1 {
		if err := env.setupNAT(ctx); err != nil {
			return nil, err
		}
	}
	// sshd needs its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	env.cmd = exec.Command(o.sshd, "-D", "-e", "-f", cfg)
	env.cmd.Stdout, env.cmd.Stderr = logf, logf
	if err := env.cmd.Start(); err != nil {
		return nil, err
	}
	env.waited = make(chan struct{})
	go func() {
		_ = env.cmd.Wait()
		close(env.waited)
	}()
	if err := env.waitReady(ctx); err != nil {
		b, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("%w; sshd log:\n%s", err, b)
	}
	ok = true
	return env, nil
}

// ensureUser creates the login account name when it does not exist: no
// home directory, /bin/sh as shell (so no shell start-up files run per
// session) and a password field of "*" (no password, but not locked, which
// sshd without PAM would refuse even for key auth). It is left in place.
func ensureUser(ctx context.Context, name string) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", "-p", "*",
		"-c", "fleet_exporter benchmark user", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("useradd %s: %w: %s", name, err, out)
	}
	return nil
}

// sshdConfig is the benchmark's sshd_config: key auth only, quiet logs,
// start-up limits high enough for the fan-out.
func sshdConfig(port int, hostKey, authKeys, pidFile string) string {
	return strings.Join([]string{
		"# written by bench/sshbench",
		fmt.Sprintf("ListenAddress 127.20.0.1:%d", port),
		"HostKey " + hostKey,
		"PidFile " + pidFile,
		"AuthorizedKeysFile " + authKeys,
		"StrictModes no",
		"UsePAM no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"LogLevel ERROR",
		"MaxStartups 200:30:400",
		"MaxSessions 100",
		"LoginGraceTime 30",
		"UseDNS no",
		"PrintMotd no",
		"PrintLastLog no",
		"X11Forwarding no",
		"AllowTcpForwarding no",
		"AllowAgentForwarding no",
		"",
	}, "\n")
}

// setupNAT maps 127.20.0.0/24:port to 127.20.0.1:port for locally generated
// connections, in a table of its own.
func (e *sshdEnv) setupNAT(ctx context.Context) error {
	_ = exec.CommandContext(ctx, e.nft, "delete", "table", "ip", natTable).Run() // stale from an aborted run
	rules := fmt.Sprintf("table ip %s {\n chain out {\n  type nat hook output priority -100; policy accept;\n"+
		"  ip daddr 127.20.0.2-127.20.0.254 tcp dport %d dnat to 127.20.0.1:%d\n }\n}\n", natTable, e.port, e.port)
	cmd := exec.CommandContext(ctx, e.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	e.nat = true
	return nil
}

// waitReady dials the first and the last address until sshd sends its
// banner, for at most 10 s.
func (e *sshdEnv) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range []string{e.addrs[0], e.addrs[len(e.addrs)-1]} {
		for {
			if err := sshBanner(net.JoinHostPort(a, strconv.Itoa(e.port))); err == nil {
				break
			} else if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("sshd not ready on %s: %w", a, err)
			}
			select {
			case <-e.waited:
				return errors.New("sshd exited")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// sshBanner connects to addr and reads the server's version line.
func sshBanner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// freePort returns a TCP port that was free on addr a moment ago.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sshdCPU returns the CPU sshd and its (reaped) session processes used.
func (e *sshdEnv) sshdCPU() time.Duration {
	if e.cmd == nil || e.cmd.Process == nil {
		return 0
	}
	d, err := benchenv.TreeCPU(e.cmd.Process.Pid)
	if err != nil {
		return 0
	}
	return d
}

// stop kills sshd by PID, removes the DNAT table and the directory.
func (e *sshdEnv) stop() {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.waited:
		case <-time.After(5 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.waited
		}
	}
	if e.nat {
		_ = exec.Command(e.nft, "delete", "table", "ip", natTable).Run()
	}
	_ = os.RemoveAll(e.dir)
}

// targets returns one SSH target per host address, as the exporter would
// build them from a host set.
func (e *sshdEnv) targets(remote string) []*config.Target {
	probe := &config.SSHProbe{
		Port: e.port, User: e.user, PrivateKeyFile: e.key, KnownHostsFile: e.knownHosts,
		Commands: []config.Command{{Name: "cmd", Run: remote}},
	}
	ts := make([]*config.Target, len(e.addrs))
	for i, a := range e.addrs {
		ts[i] = &config.Target{
			Set: "sshd", Host: a, Name: a, Probe: config.ProbeSSH,
			Interval: time.Minute, Timeout: 30 * time.Second, SSH: probe,
		}
	}
	return ts
}

// pdshPass runs pdsh over every address once and measures it.
func (e *sshdEnv) pdshPass(ctx context.Context, o sshdOptions) (passResult, error) {
	cmd := exec.CommandContext(ctx, o.pdsh, "-R", "ssh", "-f", strconv.Itoa(o.fanout), "-l", e.user, "-w", "^"+e.hostsFile, o.remote)
	cmd.Env = append(os.Environ(),
		"PDSH_SSH_ARGS_APPEND="+strings.Join([]string{
			"-F /dev/null", "-p", strconv.Itoa(e.port), "-i", e.key,
			"-o UserKnownHostsFile=" + e.knownHosts, "-o GlobalKnownHostsFile=/dev/null",
			"-o StrictHostKeyChecking=yes", "-o BatchMode=yes", "-o LogLevel=ERROR",
		}, " "))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	s0, c0, t0 := e.sshdCPU(), benchenv.CPUChildren(), time.Now()
	err := cmd.Run()
	r := passResult{n: len(e.addrs), wall: time.Since(t0), cpu: benchenv.CPUChildren() - c0, server: e.sshdCPU() - s0}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	seen := map[string]bool{}
	for line := range strings.SplitSeq(stdout.String(), "\n") {
		if h, _, ok := strings.Cut(line, ": "); ok {
			seen[h] = true
		}
	}
	r.ok = len(seen)
	r.fail = r.n - r.ok
	if r.fail > 0 {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		r.reasons = map[string]int{errClass(errors.New(msg)): r.fail}
	}
	if err != nil && r.ok == 0 {
		return r, fmt.Errorf("pdsh: %w: %s", err, stderr.String())
	}
	return r, nil
}
