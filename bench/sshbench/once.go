package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

// onceOptions configure scenario 4.
type onceOptions struct {
	sshdOptions
	bin, dshbak string
}

// runOnceCmp is scenario 4: `fleet_exporter --once --once.output=grouped`
// against `pdsh -f N | dshbak -c`, both as the operator types them, on the
// same sshd, hosts, command and known_hosts: wall time of the whole
// command, start-up included.
func runOnceCmp(ctx context.Context, o onceOptions, stdout io.Writer) error {
	if o.hosts < 2 || o.hosts > 254 {
		return errors.New("--hosts must be between 2 and 254")
	}
	start, machine := time.Now(), benchenv.DescribeMachine()
	env, err := startSSHD(ctx, o.sshdOptions)
	if err != nil {
		return err
	}
	defer env.stop()
	// Every host prints the same line: both must show one group of all.
	wantRange := fmt.Sprintf("127.20.0.[1-%d]", o.hosts)

	var ours, pdsh []float64
	for i := range o.runs + 1 {
		// Run 0 warms the page cache and sshd; it is not counted.
		oursFirst := i%2 == 0
		for _, which := range []bool{oursFirst, !oursFirst} {
			pctx, cancel := context.WithTimeout(ctx, o.passLimit)
			name, wall, out, err := "pdsh", time.Duration(0), "", error(nil)
			if which {
				name = "ours"
				wall, out, err = env.oncePass(pctx, o)
			} else {
				wall, out, err = env.dshbakPass(pctx, o)
			}
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !strings.Contains(out, wantRange) {
				return fmt.Errorf("%s: output lacks the one group %s:\n%s", name, wantRange, out)
			}
			if i == 0 {
				continue
			}
			if which {
				ours = append(ours, wall.Seconds())
			} else {
				pdsh = append(pdsh, wall.Seconds())
			}
			fmt.Fprintf(stdout, "once run=%d %-4s wall=%.2fs load=%s\n", i, name, wall.Seconds(), benchenv.LoadAvg())
		}
	}
	ratio := make([]float64, len(ours))
	for i := range ours {
		ratio[i] = pdsh[i] / ours[i]
	}
	tb := benchenv.NewTable("command", "wall s (median)", "runs")
	tb.Row(fmt.Sprintf("`pdsh -R ssh -f %d -w ^hosts '%s' \\| dshbak -c`", o.fanout, o.remote), fmt.Sprintf("%.2f", benchenv.Median(pdsh)), strconv.Itoa(len(pdsh)))
	tb.Row(fmt.Sprintf("`fleet_exporter --once --once.output=grouped --once.probe=ssh --once.concurrency=%d --once.ssh.command='%s' 127.20.0.[1-%d]`", o.fanout, o.remote, o.hosts),
		fmt.Sprintf("%.2f", benchenv.Median(ours)), strconv.Itoa(len(ours)))
	var body strings.Builder
	fmt.Fprintf(&body, "One OpenSSH sshd for %d host addresses 127.20.0.1..%d (the DNAT of scenario 2), key auth, "+
		"the same known_hosts with StrictHostKeyChecking=yes; wall time of each whole command as typed, "+
		"process start-up included, runs alternating, after one unmeasured warm-up of each. Both print one "+
		"group %s. Median ratio pdsh ÷ ours: %.2fx.\n\n", o.hosts, o.hosts, wantRange, benchenv.Median(ratio))
	body.WriteString(tb.Markdown())
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 4: --once grouped vs pdsh | dshbak -c against OpenSSH sshd", Start: start, Machine: machine,
		Body: body.String(),
	})
}

// oncePass runs fleet_exporter --once over every address.
func (e *sshdEnv) oncePass(ctx context.Context, o onceOptions) (time.Duration, string, error) {
	cmd := exec.CommandContext(ctx, o.bin, "--once", "--once.output=grouped", "--once.probe=ssh",
		"--once.concurrency="+strconv.Itoa(o.fanout), "--once.timeout=30s",
		"--once.ssh.user="+e.user, "--once.ssh.port="+strconv.Itoa(e.port), "--once.ssh.key="+e.key,
		"--once.ssh.known-hosts="+e.knownHosts, "--once.ssh.command="+o.remote,
		fmt.Sprintf("127.20.0.[1-%d]", len(e.addrs)))
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		return wall, stdout.String(), fmt.Errorf("%w: %s%s", err, stdout.String(), stderr.String())
	}
	return wall, stdout.String(), nil
}

// dshbakPass runs pdsh over every address with its output piped to
// dshbak -c, as an operator would.
func (e *sshdEnv) dshbakPass(ctx context.Context, o onceOptions) (time.Duration, string, error) {
	pdsh := exec.CommandContext(ctx, o.pdsh, "-R", "ssh", "-f", strconv.Itoa(o.fanout), "-l", e.user, "-w", "^"+e.hostsFile, o.remote)
	pdsh.Env = append(os.Environ(),
		"PDSH_SSH_ARGS_APPEND="+strings.Join([]string{
			"-F /dev/null", "-p", strconv.Itoa(e.port), "-i", e.key,
			"-o UserKnownHostsFile=" + e.knownHosts, "-o GlobalKnownHostsFile=/dev/null",
			"-o StrictHostKeyChecking=yes", "-o BatchMode=yes", "-o LogLevel=ERROR",
		}, " "))
	dshbak := exec.CommandContext(ctx, o.dshbak, "-c")
	pipe, err := pdsh.StdoutPipe()
	if err != nil {
		return 0, "", err
	}
	dshbak.Stdin = pipe
	var out, errb bytes.Buffer
	dshbak.Stdout, pdsh.Stderr, dshbak.Stderr = &out, &errb, &errb
	t0 := time.Now()
	if err := dshbak.Start(); err != nil {
		return 0, "", err
	}
	if err := pdsh.Start(); err != nil {
		_ = dshbak.Process.Kill()
		_ = dshbak.Wait()
		return 0, "", err
	}
	perr := pdsh.Wait()
	derr := dshbak.Wait()
	wall := time.Since(t0)
	if perr != nil || derr != nil {
		return wall, out.String(), fmt.Errorf("pdsh %v, dshbak %v: %s", perr, derr, errb.String())
	}
	return wall, out.String(), nil
}
