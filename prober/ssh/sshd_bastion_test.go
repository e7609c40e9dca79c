package ssh

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	tu "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// jumpHop returns a proxy_jump entry for the real sshd s, with its own
// client key and known_hosts file.
func jumpHop(t *testing.T, s *sshdtest.Server, name string) config.ProxyJump {
	t.Helper()
	k := s.ClientKey(t, name, sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	return config.ProxyJump{
		Host: s.HostPort(), User: s.User, PrivateKeyFile: k.Private,
		KnownHostsFile: s.KnownHosts(t, name+"_known_hosts", sshdtest.KnownHostsPlain),
		HostKeyPolicy:  config.HostKeyPolicyStrict,
	}
}

// bastionFleet is a real OpenSSH target and in-process targets, all with
// one user key and one known_hosts file.
type bastionFleet struct {
	targets []*config.Target
	sshd    *sshdtest.Server
}

// newBastionFleet starts n in-process servers and one real sshd target,
// and returns their targets with the ssh block cfg completed by their
// credentials.
func newBastionFleet(t *testing.T, n int, cfg config.SSHProbe) *bastionFleet {
	t.Helper()
	dir := t.TempDir()
	hostKey, user := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519")
	f := &bastionFleet{}
	var known strings.Builder
	var inproc []*sshserver.TestServer
	for range n {
		srv := tu.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{hostKey.Signer}, AuthorizedKeys: []ssh.PublicKey{user.Pub}})
		known.WriteString(knownHostsFor(srv.Port, hostKey.Pub))
		inproc = append(inproc, srv)
	}
	f.sshd = sshdtest.Start(t, sshdtest.Options{Addr: "127.0.0.4", HostKeyTypes: []string{sshdtest.KeyEd25519}})
	sshdUser := f.sshd.ClientKey(t, "id_target", sshdtest.KeyEd25519, "")
	f.sshd.Authorize(t, sshdUser)
	sshdKH := f.sshd.KnownHosts(t, "target_known_hosts", sshdtest.KnownHostsPlain)
	b, err := os.ReadFile(sshdKH)
	if err != nil {
		t.Fatal(err)
	}
	known.Write(b)
	cfg.KnownHostsFile = writeFile(t, dir, "known_hosts", []byte(known.String()))
	cfg.HostKeyPolicy = config.HostKeyPolicyStrict
	cfg.Commands = []config.Command{{Name: "echo", Run: "echo hi"}}
	inCfg := cfg
	inCfg.User, inCfg.PrivateKeyFile = sshserver.DefaultUser, writeFile(t, dir, "id_user", sshkeys.OpenSSH(t, user, ""))
	for _, srv := range inproc {
		f.targets = append(f.targets, tu.SSHTarget("behind", srv.HostPort(), tu.WithSSH(&inCfg), tu.WithTimeout(sshdProbeTimeout)))
	}
	sshdCfg := cfg
	sshdCfg.User, sshdCfg.PrivateKeyFile = f.sshd.User, sshdUser.Private
	f.targets = append(f.targets, tu.SSHTarget("behind", f.sshd.HostPort(), tu.WithSSH(&sshdCfg), tu.WithTimeout(sshdProbeTimeout)))
	return f
}

// probeAll probes every target at once and returns the results in target
// order.
func probeAll(p *Prober, targets []*config.Target) []probe.Result {
	out := make([]probe.Result, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = p.Probe(context.Background(), tg)
		}()
	}
	wg.Wait()
	return out
}

// TestSSHThroughOpenSSHBastion probes a real sshd and in-process hosts
// through two real OpenSSH jump hosts. The bastions see as many logins as
// connections, not one per target; a crash of the first hop fails every
// target behind it with reason bastion and an error naming the hop, the
// metrics say it is down, and the targets recover with the bastion.
func TestSSHThroughOpenSSHBastion(t *testing.T) {
	sshdtest.RequireOpenSSH(t)
	first := sshdtest.Start(t, sshdtest.Options{AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	second := sshdtest.Start(t, sshdtest.Options{Addr: "127.0.0.2", AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	hops := []config.ProxyJump{jumpHop(t, first, "id_first"), jumpHop(t, second, "id_second")}
	const connections = 2
	hops[0].Connections = connections
	fleet := newBastionFleet(t, 8, config.SSHProbe{ProxyJump: hops})

	p := sshdNewProber(t)
	p.SetBastionLimits(config.Limit{Concurrency: 4})
	p.Reconcile(fleet.targets)
	for round := range 3 {
		for i, res := range probeAll(p, fleet.targets) {
			if !res.Success {
				t.Fatalf("round %d, %s: reason %q err %v\nfirst hop log:\n%s", round, fleet.targets[i].Host, res.Reason, res.Err, first.Log(t))
			}
			if res.SSH.HostKey == nil || res.SSH.HostKey.Type != ssh.KeyAlgoED25519 {
				t.Errorf("%s: host key %+v, want the target's ed25519 key", fleet.targets[i].Host, res.SSH.HostKey)
			}
		}
	}
	want := connections
	first.WaitLog(t, sshdLogWait, func(string) bool { return first.PublicKeyLogins(t) >= want })
	second.WaitLog(t, sshdLogWait, func(string) bool { return second.PublicKeyLogins(t) >= want })
	if got := first.PublicKeyLogins(t); got != want {
		t.Errorf("first hop logged %d logins for %d targets × 3 rounds, want %d", got, len(fleet.targets), want)
	}
	if got := second.PublicKeyLogins(t); got != want {
		t.Errorf("second hop logged %d logins, want %d", got, want)
	}
	name := first.User + "@" + first.HostPort() + "," + second.User + "@" + second.HostPort()
	checkBastionMetrics(t, p, name, 1, len(fleet.targets))

	first.Crash(t)
	for i, res := range probeAll(p, fleet.targets) {
		if res.Reason != probe.ReasonBastion || res.Success {
			t.Fatalf("%s with the first hop down: success %v reason %q err %v, want reason bastion",
				fleet.targets[i].Host, res.Success, res.Reason, res.Err)
		}
		if !strings.Contains(res.Err.Error(), "hop "+first.HostPort()) {
			t.Errorf("error %q does not name the failed hop %s", res.Err, first.HostPort())
		}
	}
	waitUntil(t, 30*time.Second, func() bool { return bastionUp(p) == 0 })
	checkBastionMetrics(t, p, name, 0, len(fleet.targets))

	first.Restart(t)
	// Probes reconnect once the backoff (seconds after a few failures)
	// has passed, without waiting for the keepalive loop.
	waitUntil(t, 60*time.Second, func() bool {
		return p.Probe(context.Background(), fleet.targets[0]).Success
	})
	if up := bastionUp(p); up != 1 {
		t.Errorf("fleet_ssh_bastion_up = %v after a probe through it succeeded", up)
	}
	for i, res := range probeAll(p, fleet.targets) {
		if !res.Success {
			t.Errorf("%s after the bastion returned: reason %q err %v", fleet.targets[i].Host, res.Reason, res.Err)
		}
	}
}

// bastionUp returns fleet_ssh_bastion_up of the only bastion, or -1.
func bastionUp(p *Prober) float64 {
	bs := p.Bastions()
	if len(bs) != 1 {
		return -1
	}
	if bs[0].Up {
		return 1
	}
	return 0
}

// checkBastionMetrics checks the bastion families of p for one bastion.
func checkBastionMetrics(t *testing.T, p *Prober, name string, up float64, targets int) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["bastion"] != name {
				t.Errorf("%s has bastion label %q, want %q", mf.GetName(), labels["bastion"], name)
			}
			key := mf.GetName()
			if r := labels["result"]; r != "" {
				key += "/" + r
			}
			if s := labels["set"]; s != "" {
				key += "/" + s
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[key] = v
		}
	}
	if got["fleet_ssh_bastion_up"] != up {
		t.Errorf("fleet_ssh_bastion_up = %v, want %v", got["fleet_ssh_bastion_up"], up)
	}
	if got["fleet_ssh_bastion_targets/behind"] != float64(targets) {
		t.Errorf("fleet_ssh_bastion_targets{set=behind} = %v, want %d", got["fleet_ssh_bastion_targets/behind"], targets)
	}
	if got["fleet_ssh_bastion_connects_total/success"] < 1 {
		t.Errorf("fleet_ssh_bastion_connects_total{result=success} = %v", got["fleet_ssh_bastion_connects_total/success"])
	}
	if up == 0 && got["fleet_ssh_bastion_connects_total/lost"]+got["fleet_ssh_bastion_connects_total/connect"] == 0 {
		t.Errorf("bastion down without a failed or lost connection counted: %v", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 3+len(connectResults)+1 {
		t.Errorf("%d series (err %v), want %d", n, err, 3+len(connectResults)+1)
	}
}

// TestSSHBastionReachesNamesItResolves checks that a target behind a
// bastion is resolved by the bastion, as with OpenSSH's ProxyJump, not by
// the exporter: the probe reports no address of its own, and a name the
// bastion cannot resolve is the target's failure (reason dns), not the
// bastion's.
func TestSSHBastionReachesNamesItResolves(t *testing.T) {
	sshdtest.RequireOpenSSH(t)
	jump := sshdtest.Start(t, sshdtest.Options{AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	hop := jumpHop(t, jump, "id_jump")
	f := newFixture(t, sshserver.TestOptions{})
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ProxyJump = []config.ProxyJump{hop}
	host := net.JoinHostPort("localhost", strconv.Itoa(f.srv.Port))
	cfg.KnownHostsFile = writeFile(t, f.dir, "kh_localhost", fmt.Appendf(nil, "%s", knownHostsLine(host, f.host.Pub)))
	p := sshdNewProber(t)
	res := p.Probe(context.Background(), tu.SSHTarget("behind", host, tu.WithSSH(cfg), tu.WithTimeout(sshdProbeTimeout)))
	checkReason(t, res, probe.ReasonNone)
	if res.Addr.IsValid() {
		t.Errorf("probe through a bastion reports address %v, want none (the bastion resolved it)", res.Addr)
	}

	bad := tu.SSHTarget("behind", "no-such-host.invalid:22", tu.WithSSH(cfg), tu.WithTimeout(sshdProbeTimeout))
	res = p.Probe(context.Background(), bad)
	if res.Success || res.Reason != probe.ReasonDNS {
		t.Errorf("unresolvable name behind a working bastion: success %v reason %q err %v, want reason dns",
			res.Success, res.Reason, res.Err)
	}
}

// TestSSHBastionFirstHopLikeATarget checks that the first hop of a chain is
// reached as a direct target would be: its name resolved by the exporter's
// resolver (here from a hosts file the system resolver does not read) under
// the set's address family rule, and from the set's source address.
func TestSSHBastionFirstHopLikeATarget(t *testing.T) {
	sshdtest.RequireOpenSSH(t)
	jump := sshdtest.Start(t, sshdtest.Options{AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	hop := jumpHop(t, jump, "id_jump")
	const name = "jump.fx.test"
	port := strconv.Itoa(jump.Port)
	hop.Host = net.JoinHostPort(name, port)
	hop.KnownHostsFile = filepath.Join(jump.Dir, "named_known_hosts")
	if err := jump.WriteKnownHosts(hop.KnownHostsFile, sshdtest.KnownHostsPlain, []string{"[" + name + "]:" + port}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res := dns.New(dns.Options{
		Hosts:      writeFile(t, dir, "hosts", []byte("127.0.0.1 "+name+"\n::1 "+name+"\n")),
		ResolvConf: writeFile(t, dir, "resolv.conf", nil),
	})
	p := NewProber(res, slog.New(slog.NewTextHandler(t.Output(), nil)))
	t.Cleanup(p.Close)

	f := newFixture(t, sshserver.TestOptions{})
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ProxyJump = []config.ProxyJump{hop}
	target := func(set, family string, src netip.Addr) *config.Target {
		tg := tu.SSHTarget(set, f.srv.HostPort(), tu.WithSSH(cfg), tu.WithTimeout(sshdProbeTimeout), tu.WithSourceAddress(src))
		tg.IP = config.IPPolicy{Preferred: family}
		return tg
	}
	// sshd listens on 127.0.0.1 only: ip4 reaches it, ip6 (::1) is refused.
	checkReason(t, p.Probe(context.Background(), target("four", config.IP4, netip.Addr{})), probe.ReasonNone)
	six := p.Probe(context.Background(), target("six", config.IP6, netip.Addr{}))
	if six.Success || six.Reason != probe.ReasonBastion || !strings.Contains(six.Err.Error(), "[::1]:"+port) {
		t.Errorf("first hop with ip_protocol ip6: success %v reason %q err %v, want reason bastion dialling [::1]:%s", six.Success, six.Reason, six.Err, port)
	}
	src := netip.MustParseAddr("127.0.0.3")
	checkReason(t, p.Probe(context.Background(), target("uplink", config.IP4, src)), probe.ReasonNone)
	jump.WaitLog(t, sshdLogWait, func(l string) bool {
		return strings.Contains(l, "Accepted publickey") && strings.Contains(l, "from "+src.String()+" port")
	})
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// knownHostsLine returns a known_hosts line for hostport.
func knownHostsLine(hostport string, pub ssh.PublicKey) string {
	host, port, _ := net.SplitHostPort(hostport)
	if port == "22" {
		return host + " " + string(ssh.MarshalAuthorizedKey(pub))
	}
	return "[" + host + "]:" + port + " " + string(ssh.MarshalAuthorizedKey(pub))
}
