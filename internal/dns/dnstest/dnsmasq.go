package dnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Dnsmasq is a Debian dnsmasq serving names from a hosts file, started by
// StartDnsmasq inside a test's network namespace and stopped with the test.
type Dnsmasq struct {
	// Addr is the address it answers on (port 53).
	Addr netip.Addr
	// HostsFile is the file of its names; change it with SetHosts.
	HostsFile string
	// ResolvConf is a resolv.conf naming it, for the resolver under test.
	ResolvConf string

	log string
	cmd *exec.Cmd
}

// DnsmasqOptions configures StartDnsmasq.
type DnsmasqOptions struct {
	// Netns is the namespace (as `ip netns` names it) to run in.
	Netns string
	// Addr is the address of the namespace to answer on.
	Addr netip.Addr
	// Domain is answered locally: a name under it that the hosts file does
	// not hold is NXDOMAIN, never forwarded.
	Domain string
	// Hosts is the initial hosts file content.
	Hosts string
	// TTL is the TTL of the answers (--local-ttl); at least one second.
	TTL time.Duration
}

// StartDnsmasq starts dnsmasq in opts.Netns and waits until it has read
// its hosts file, or skips the test when dnsmasq is not installed (Debian
// package dnsmasq). It reads no configuration of the machine: no
// /etc/dnsmasq.conf, /etc/hosts or /etc/resolv.conf.
func StartDnsmasq(t testing.TB, opts DnsmasqOptions) *Dnsmasq {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/dnsmasq"); serr != nil {
			t.Skip("dnstest: dnsmasq is missing; install the Debian package dnsmasq")
		}
		bin = "/usr/sbin/dnsmasq"
	}
	dir := t.TempDir()
	d := &Dnsmasq{
		Addr:       opts.Addr,
		HostsFile:  filepath.Join(dir, "hosts"),
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		log:        filepath.Join(dir, "dnsmasq.log"),
	}
	d.SetHostsFile(t, opts.Hosts)
	// One attempt with a short timeout keeps the dead-server cases quick.
	conf := fmt.Sprintf("nameserver %s\noptions timeout:1 attempts:1\n", opts.Addr)
	if err := os.WriteFile(d.ResolvConf, []byte(conf), 0o644); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	ttl := max(int(opts.TTL/time.Second), 1)
	d.cmd = exec.Command("ip", "netns", "exec", opts.Netns, bin,
		"--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+d.HostsFile,
		"--local=/"+opts.Domain+"/",
		"--local-ttl="+strconv.Itoa(ttl), "--neg-ttl="+strconv.Itoa(ttl),
		"--listen-address="+opts.Addr.String(), "--bind-interfaces", "--port=53",
		// The test's temporary directory is root's; dnsmasq must stay root
		// to read the hosts file again on SIGHUP.
		"--user=root", "--group=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
		"--log-queries", "--log-facility="+d.log,
	)
	d.cmd.Stdout, d.cmd.Stderr = t.Output(), t.Output()
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("dnstest: start dnsmasq: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = d.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-exited
	})
	d.waitLog(t, "read "+d.HostsFile, exited)
	return d
}

// SetHostsFile replaces the hosts file; call Reload for a running dnsmasq
// to read it.
func (d *Dnsmasq) SetHostsFile(t testing.TB, content string) {
	t.Helper()
	if err := os.WriteFile(d.HostsFile, []byte(content), 0o644); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
}

// Reload sends SIGHUP, on which dnsmasq reads its hosts file again, and
// waits until it has.
func (d *Dnsmasq) Reload(t testing.TB) {
	t.Helper()
	before := strings.Count(d.readLog(t), "read "+d.HostsFile)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("dnstest: SIGHUP dnsmasq: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.readLog(t), "read "+d.HostsFile) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("dnstest: dnsmasq did not reread %s:\n%s", d.HostsFile, d.readLog(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops dnsmasq, so its address answers every query with ICMP port
// unreachable.
func (d *Dnsmasq) Kill(t testing.TB) {
	t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatalf("dnstest: kill dnsmasq: %v", err)
	}
}

// Queries returns how many queries of type qtype ("A", "AAAA") for name
// dnsmasq has logged so far.
func (d *Dnsmasq) Queries(t testing.TB, qtype, name string) int {
	t.Helper()
	return strings.Count(d.readLog(t), "query["+qtype+"] "+name+" from ")
}

func (d *Dnsmasq) readLog(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(d.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("dnstest: %v", err)
	}
	return string(b)
}

// waitLog waits until the log holds want, failing if dnsmasq exits first.
func (d *Dnsmasq) waitLog(t testing.TB, want string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.readLog(t), want) {
		select {
		case <-exited:
			t.Fatalf("dnstest: dnsmasq exited:\n%s", d.readLog(t))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnstest: dnsmasq did not log %q:\n%s", want, d.readLog(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
