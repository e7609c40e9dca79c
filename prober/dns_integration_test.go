package prober_test

// Name resolution against a real nameserver: Debian's dnsmasq runs in the
// host namespace of a netnstest pair and answers from a hosts file the test
// writes; the resolver's queries leave from the client namespace (through
// NS.ClientDialer) and nothing else of the machine's DNS is read. The probes
// themselves go to loopback listeners of this process.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/netnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	kit "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/icmp"
	sshprober "github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/prober/tcp"
)

// dnsEnv is one dnsmasq and a resolver pointed at it.
type dnsEnv struct {
	server *dnstest.Dnsmasq
	res    *dns.Resolver
	reg    *prometheus.Registry
}

func newDNSEnv(t *testing.T, hosts string, ttl config.DNS) *dnsEnv {
	t.Helper()
	n := netnstest.New(t, netnstest.Options{})
	server := dnstest.StartDnsmasq(t, dnstest.DnsmasqOptions{
		Netns: n.HostName, Addr: n.HostAddr, Domain: "fx.test", Hosts: hosts, TTL: time.Second,
	})
	// An empty hosts file of our own: the machine's is not part of the test.
	ownHosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(ownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	res := dns.New(dns.Options{
		ResolvConf: server.ResolvConf, Hosts: ownHosts, TTL: ttl,
		Dial: n.ClientDialer(t), Registerer: reg,
	})
	return &dnsEnv{server: server, res: res, reg: reg}
}

// counter returns the value of the counter name (with result=result when
// not empty) in reg.
func counter(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	var labels map[string]string
	if result != "" {
		labels = map[string]string{"result": result}
	}
	if ms := kit.Series(t, reg, name, labels); len(ms) > 0 {
		return ms[0].GetCounter().GetValue()
	}
	return 0
}

func tcpProbe(t *testing.T, p *tcp.Prober, target *config.Target) probe.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return p.Probe(ctx, target)
}

var pinned4 = config.IPPolicy{Preferred: config.IP4}

func withIP(pol config.IPPolicy) kit.TargetOption {
	return func(t *config.Target) { t.IP = pol }
}

func TestDNSRecordChangeIsFollowed(t *testing.T) {
	port := kit.TCPListener(t, "127.0.0.1")
	kit.TCPListenerOn(t, "127.0.0.2", port)
	env := newDNSEnv(t, "127.0.0.1 moving.fx.test\n", config.DNS{MinTTL: config.Duration(time.Second)})
	p := tcp.NewProber(env.res)
	target := kit.TCPTarget("dns", "moving.fx.test:"+strconv.Itoa(port), withIP(pinned4))

	if r := tcpProbe(t, p, target); !r.Success || r.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("first probe: success %v addr %v err %v; want success to 127.0.0.1", r.Success, r.Addr, r.Err)
	}
	env.server.SetHostsFile(t, "127.0.0.2 moving.fx.test\n")
	env.server.Reload(t)
	changed := time.Now()
	// The answer had a TTL of 1s: within it (plus scheduling slack) the
	// probe must go to the new address.
	deadline := changed.Add(time.Second + 2*time.Second)
	for {
		r := tcpProbe(t, p, target)
		if !r.Success {
			t.Fatalf("probe during the change failed: %v (%s)", r.Err, r.Reason)
		}
		if r.Addr == netip.MustParseAddr("127.0.0.2") {
			t.Logf("new address probed %v after the change", time.Since(changed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still probing %v %v after the record changed, TTL 1s", r.Addr, time.Since(changed))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDNSSearchList checks that resolv.conf's search list and ndots apply,
// as with the system resolver: a short name is asked as short.fx.test.
func TestDNSSearchList(t *testing.T) {
	port := kit.TCPListener(t, "127.0.0.1")
	env := newDNSEnv(t, "127.0.0.1 short.fx.test\n", config.DNS{})
	// Rewritten before the first lookup reads it.
	conf := fmt.Sprintf("nameserver %s\nsearch fx.test\noptions ndots:1 timeout:1 attempts:1\n", env.server.Addr)
	if err := os.WriteFile(env.server.ResolvConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := tcpProbe(t, tcp.NewProber(env.res), kit.TCPTarget("dns", "short:"+strconv.Itoa(port), withIP(pinned4)))
	if !r.Success || r.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("short name: success %v addr %v err %v; want success to 127.0.0.1", r.Success, r.Addr, r.Err)
	}
	if n := env.server.Queries(t, "A", "short.fx.test"); n != 1 {
		t.Errorf("dnsmasq saw %d A queries for short.fx.test, want 1", n)
	}
}

func TestDNSNXDomainIsNegativelyCached(t *testing.T) {
	env := newDNSEnv(t, "127.0.0.1 other.fx.test\n", config.DNS{NegativeTTL: config.Duration(time.Minute)})
	p := tcp.NewProber(env.res)
	target := kit.TCPTarget("dns", "gone.fx.test:22", withIP(pinned4))
	for i := range 3 {
		r := tcpProbe(t, p, target)
		if r.Success || r.Reason != probe.ReasonDNS || r.Addr.IsValid() {
			t.Fatalf("probe %d: success %v reason %q addr %v; want reason dns and no address", i, r.Success, r.Reason, r.Addr)
		}
	}
	if n := env.server.Queries(t, "A", "gone.fx.test"); n != 1 {
		t.Errorf("dnsmasq saw %d A queries for gone.fx.test, want 1 (negative answer cached)", n)
	}
	if n := counter(t, env.reg, "fleet_dns_lookups_total", dns.ResultNXDomain); n != 3 {
		t.Errorf("fleet_dns_lookups_total{result=nxdomain} = %v, want 3", n)
	}
}

func TestDNSServerDeadServesStaleThenFails(t *testing.T) {
	port := kit.TCPListener(t, "127.0.0.1")
	const maxStale = 2 * time.Second
	env := newDNSEnv(t, "127.0.0.1 stale.fx.test\n", config.DNS{
		MinTTL: config.Duration(time.Second), MaxTTL: config.Duration(time.Second), MaxStale: config.Duration(maxStale),
	})
	p := tcp.NewProber(env.res)
	target := kit.TCPTarget("dns", "stale.fx.test:"+strconv.Itoa(port), withIP(pinned4))
	if r := tcpProbe(t, p, target); !r.Success {
		t.Fatalf("first probe failed: %v", r.Err)
	}
	fresh := time.Now()
	env.server.Kill(t)

	var stale int
	for {
		r := tcpProbe(t, p, target)
		if !r.Success {
			if r.Reason != probe.ReasonDNS {
				t.Fatalf("probe failed with reason %q (%v), want dns", r.Reason, r.Err)
			}
			// The answer may be served for TTL + max_stale after it
			// was fetched, not less.
			if since := time.Since(fresh); since < time.Second+maxStale-200*time.Millisecond {
				t.Errorf("probe failed %v after the last answer, before TTL + max_stale", since)
			}
			break
		}
		if s := counter(t, env.reg, "fleet_dns_stale_answers_total", ""); s > float64(stale) {
			stale = int(s)
		}
		if time.Since(fresh) > time.Second+maxStale+3*time.Second {
			t.Fatalf("still succeeding %v after the server died", time.Since(fresh))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if stale == 0 {
		t.Errorf("no stale answer was counted while the server was dead")
	}
	if n := counter(t, env.reg, "fleet_dns_lookups_total", dns.ResultError); n < 1 {
		t.Errorf("fleet_dns_lookups_total{result=error} = %v, want at least 1", n)
	}
}

func TestDNSAAAAOnlyName(t *testing.T) {
	port := kit.TCPListener(t, "::1")
	env := newDNSEnv(t, "::1 six.fx.test\n", config.DNS{})
	p := tcp.NewProber(env.res)

	// The default policy prefers IPv4 and falls back to IPv6.
	def := kit.TCPTarget("dns", "six.fx.test:"+strconv.Itoa(port),
		withIP(config.IPPolicy{Preferred: config.IP4, Fallback: true}))
	if r := tcpProbe(t, p, def); !r.Success || r.Addr != netip.IPv6Loopback() {
		t.Errorf("prefer ip4 with fallback: success %v addr %v err %v; want success to ::1", r.Success, r.Addr, r.Err)
	}
	six := kit.TCPTarget("dns", "six.fx.test:"+strconv.Itoa(port), withIP(config.IPPolicy{Preferred: config.IP6}))
	if r := tcpProbe(t, p, six); !r.Success || r.Addr != netip.IPv6Loopback() {
		t.Errorf("ip_protocol ip6: success %v addr %v err %v; want success to ::1", r.Success, r.Addr, r.Err)
	}
	four := kit.TCPTarget("dns", "six.fx.test:"+strconv.Itoa(port), withIP(pinned4))
	if r := tcpProbe(t, p, four); r.Success || r.Reason != probe.ReasonDNS {
		t.Errorf("ip_protocol ip4: success %v reason %q; want reason dns", r.Success, r.Reason)
	}

	mode, err := icmp.DetectMode(false)
	if err != nil {
		t.Logf("ICMP part skipped: %v", err)
		return
	}
	ip := icmp.NewProber(env.res, mode, nil)
	defer ip.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	r := ip.Probe(ctx, kit.ICMPTarget("dns", "six.fx.test", withIP(config.IPPolicy{Preferred: config.IP6})))
	if !r.Success || r.Addr != netip.IPv6Loopback() {
		t.Errorf("icmp: success %v addr %v reason %q err %v; want success to ::1", r.Success, r.Addr, r.Reason, r.Err)
	}
	// The daemon's path: a name in a batch is looked up under the same
	// rule before it joins the engine.
	for _, pol := range []config.IPPolicy{{Preferred: config.IP6}, {Preferred: config.IP4, Fallback: true}} {
		tg := kit.ICMPTarget("dns", "six.fx.test", withIP(pol), kit.WithTimeout(3*time.Second))
		sink := newBatchWait(1)
		now := time.Now()
		ip.ProbeBatch(ctx, []probe.Request{{Target: tg, Due: now, Start: now, Timeout: tg.Timeout}}, sink)
		if r := sink.wait(t)[0].Result; !r.Success || r.Addr != netip.IPv6Loopback() {
			t.Errorf("icmp batch, policy %+v: success %v addr %v reason %q err %v; want success to ::1", pol, r.Success, r.Addr, r.Reason, r.Err)
		}
	}
	tg := kit.ICMPTarget("dns", "six.fx.test", withIP(pinned4), kit.WithTimeout(3*time.Second))
	sink := newBatchWait(1)
	now := time.Now()
	ip.ProbeBatch(ctx, []probe.Request{{Target: tg, Due: now, Start: now, Timeout: tg.Timeout}}, sink)
	if r := sink.wait(t)[0].Result; r.Success || r.Reason != probe.ReasonDNS {
		t.Errorf("icmp batch, ip_protocol ip4: success %v reason %q; want reason dns", r.Success, r.Reason)
	}
}

// TestDNSAAAAOnlySSH checks that an SSH probe of a name with only an AAAA
// record reaches an SSH server on ::1, end to end through the resolver.
func TestDNSAAAAOnlySSH(t *testing.T) {
	host := sshkeys.Generate(t, "ed25519")
	srv := kit.StartSSHServer(t, sshserver.TestOptions{Addr: "::1", HostSigners: []ssh.Signer{host.Signer}, Password: "six-password"})
	env := newDNSEnv(t, "::1 sixssh.fx.test\n", config.DNS{})
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("six-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := sshprober.NewProber(env.res, nil)
	defer p.Close()
	cfg := &config.SSHProbe{
		User: sshserver.DefaultUser, PasswordFile: pw, InsecureSkipHostKeyVerification: true,
		MaxOutputBytes: 1 << 20, Commands: []config.Command{{Name: "echo", Run: "echo six"}},
	}
	target := kit.SSHTarget("dns", "sixssh.fx.test:"+strconv.Itoa(srv.Port), kit.WithSSH(cfg),
		withIP(config.IPPolicy{Preferred: config.IP4, Fallback: true}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r := p.Probe(ctx, target)
	if !r.Success || r.Addr != netip.IPv6Loopback() {
		t.Fatalf("ssh: success %v addr %v reason %q err %v; want success to ::1", r.Success, r.Addr, r.Reason, r.Err)
	}
	if len(r.SSH.Commands) != 1 || r.SSH.Commands[0].Bytes != int64(len("six\n")) {
		t.Errorf("commands %+v, want one echo with 4 bytes of output", r.SSH.Commands)
	}
}
