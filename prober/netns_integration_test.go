package prober_test

// Network-level fault tests: the probers run against a host in a
// test network namespace whose packets nftables drops at random or
// altogether, or whose replies a TUN responder delays. Every probe runs
// synchronously on an OS thread moved into the client namespace (see
// package netnstest for why its sockets stay there); nothing is sent
// outside the two namespaces the test creates.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/netnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/icmp"
	sshprober "github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/prober/tcp"
)

const (
	// netnsSlack is how long after its timeout a failing probe may end:
	// enough for -race and a loaded machine, far below a second timeout.
	netnsSlack = 500 * time.Millisecond
	// netnsFast bounds a probe of a healthy address on the veth.
	netnsFast = 300 * time.Millisecond
	// netnsEchoDelay is the TUN responder's delay.
	netnsEchoDelay = 50 * time.Millisecond
	// netnsRTTSlack is how much the measured RTT may exceed the delay.
	netnsRTTSlack = 30 * time.Millisecond
)

// netnsProbe runs p.Probe(t) on a thread inside the client namespace under
// a context with the target's timeout, then calls release (which closes
// whatever the prober keeps open between probes: the shared ICMP socket,
// pooled SSH connections; nil for none) and checks that nothing is left
// behind: no file descriptor, no goroutine.
func netnsProbe(t *testing.T, ns *netnstest.NS, p probe.Prober, tg *config.Target, release func()) probe.Result {
	t.Helper()
	res, check := netnsStart(t, ns, p, tg)
	r := <-res
	if release != nil {
		release()
	}
	check()
	return r
}

// netnsStart starts a probe like netnsProbe without waiting for it; the
// result arrives on the channel, and check, called after it did, runs the
// leak checks. Several probes may run at once; the check of the first one
// started covers them all when called after every result arrived.
//
// The prober must be one that opens its sockets while called, as every
// prober of this package does (net.Dialer, pro-bing, the shared ICMP engine
// on its first probe): a socket opened later by a background goroutine would
// live in the root namespace.
func netnsStart(t *testing.T, ns *netnstest.NS, p probe.Prober, tg *config.Target) (<-chan probe.Result, func()) {
	t.Helper()
	fdsBefore, err := netnstest.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	leak := goleak.IgnoreCurrent()
	out := make(chan probe.Result, 1)
	go func() {
		var r probe.Result
		err := ns.InClient(func() {
			ctx, cancel := context.WithTimeout(context.Background(), tg.Timeout)
			defer cancel()
			r = p.Probe(ctx, tg)
		})
		if err != nil {
			r = probe.Result{Reason: probe.ReasonError, Err: err}
		}
		out <- r
	}()
	return out, func() {
		t.Helper()
		// goleak retries until the probe's goroutines are gone; only
		// then can their descriptors have been closed.
		if err := goleak.Find(leak); err != nil {
			t.Errorf("goroutines left behind by the probe: %v", err)
		}
		if fdsAfter, err := netnstest.OpenFDs(); err != nil {
			t.Error(err)
		} else if fdsAfter > fdsBefore {
			t.Errorf("open file descriptors went from %d to %d: the probe leaked %d", fdsBefore, fdsAfter, fdsAfter-fdsBefore)
		}
	}
}

// netnsClose closes p if it has anything to close. The ICMP prober gains a
// Close with its shared socket engine; asking through an interface
// keeps this test independent of that change.
func netnsClose(p any) {
	if c, ok := p.(interface{ Close() }); ok {
		c.Close()
	}
}

// netnsCheckDuration checks a probe's wall time against [lo, hi].
func netnsCheckDuration(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s took %v, want within [%v, %v]", what, got, lo, hi)
	}
}

func TestNetnsICMPFaults(t *testing.T) {
	ns := netnstest.New(t, netnstest.Options{EchoDelay: netnsEchoDelay})
	res := dns.New(dns.Options{})

	type check struct {
		sent, received int
		dropped        int
		res            probe.Result
	}
	tests := []struct {
		name    string
		fault   func(t *testing.T)
		addr    netip.Addr
		count   int
		timeout time.Duration
		check   func(t *testing.T, c check)
	}{
		{
			name: "healthy", fault: func(t *testing.T) { ns.Clear(t) }, addr: ns.HostAddr,
			count: 5, timeout: 2 * time.Second,
			check: func(t *testing.T, c check) {
				if !c.res.Success || c.sent != 5 || c.received != 5 {
					t.Errorf("success=%v sent=%d received=%d (%v), want a full round of 5", c.res.Success, c.sent, c.received, c.res.Err)
				}
				// All replies in: the round ends without waiting for the
				// timeout.
				netnsCheckDuration(t, "healthy round", c.res.Duration, 0, 4*20*time.Millisecond+netnsFast)
			},
		},
		{
			// 20 requests, each dropped with probability 0.3: the number
			// dropped is Binomial(20, 0.3), mean 6. The exact check is
			// received == sent - dropped, where dropped is nft's own
			// counter: the prober's counts must reflect precisely what the
			// network did. The statistical bound received >= 6 (at most 14
			// dropped) fails by chance with p = 4.3e-5; "something was
			// dropped" is checked over both modes together (40 requests,
			// chance failure p = 0.7^40 = 6.4e-7) in TestNetnsICMPFaults's
			// last step, as 0.7^20 = 8e-4 per mode would be too flaky.
			name: "30% loss", fault: func(t *testing.T) { ns.Loss(t, 30) }, addr: ns.HostAddr,
			count: 20, timeout: 1500 * time.Millisecond,
			check: func(t *testing.T, c check) {
				if c.sent != 20 {
					t.Errorf("sent %d, want 20", c.sent)
				}
				if c.received != c.sent-c.dropped {
					t.Errorf("received %d of %d with %d dropped by nft, want exactly %d", c.received, c.sent, c.dropped, c.sent-c.dropped)
				}
				if c.received < 6 {
					t.Errorf("received %d of %d, want at least 6 (30%% loss)", c.received, c.sent)
				}
				if !c.res.Success || c.res.Reason != probe.ReasonNone {
					t.Errorf("success=%v reason=%q (%v), want success despite loss", c.res.Success, c.res.Reason, c.res.Err)
				}
				if c.received < c.sent {
					// Missing replies keep the round open until the
					// timeout, never longer.
					netnsCheckDuration(t, "lossy round", c.res.Duration, 1500*time.Millisecond-50*time.Millisecond, 1500*time.Millisecond+netnsSlack)
				}
			},
		},
		{
			name: "blackhole", fault: func(t *testing.T) { ns.Blackhole(t) }, addr: ns.HostAddr,
			count: 3, timeout: time.Second,
			check: func(t *testing.T, c check) {
				if c.res.Success || c.res.Reason != probe.ReasonTimeout {
					t.Errorf("success=%v reason=%q (%v), want reason %q", c.res.Success, c.res.Reason, c.res.Err, probe.ReasonTimeout)
				}
				if c.sent != 3 || c.received != 0 {
					t.Errorf("sent=%d received=%d, want 3 and 0", c.sent, c.received)
				}
				if c.dropped < 3 {
					t.Errorf("nft dropped %d packets, want at least the 3 requests", c.dropped)
				}
				if c.res.ICMP != nil && c.res.ICMP.RTT != 0 {
					t.Errorf("rtt %v without replies, want 0", c.res.ICMP.RTT)
				}
				netnsCheckDuration(t, "blackholed round", c.res.Duration, time.Second-50*time.Millisecond, time.Second+netnsSlack)
			},
		},
		{
			name: "50ms latency", fault: func(t *testing.T) { ns.Clear(t) }, addr: ns.EchoAddr,
			count: 5, timeout: 2 * time.Second,
			check: func(t *testing.T, c check) {
				if !c.res.Success || c.received != 5 {
					t.Fatalf("success=%v received=%d (%v), want all 5 replies", c.res.Success, c.received, c.res.Err)
				}
				if rtt := c.res.ICMP.RTT; rtt < netnsEchoDelay || rtt > netnsEchoDelay+netnsRTTSlack {
					t.Errorf("rtt %v, want within [%v, %v]", rtt, netnsEchoDelay, netnsEchoDelay+netnsRTTSlack)
				}
			},
		},
	}

	modes := []icmp.Mode{icmp.ModeUnprivileged, icmp.ModePrivileged}
	lossDropped, lossModes := 0, 0
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			// The harness allows both socket kinds in the client
			// namespace; detection must agree, or the modes are not what
			// this test claims to cover.
			var (
				detected  icmp.Mode
				detectErr error
			)
			if err := ns.InClient(func() { detected, detectErr = icmp.DetectMode(mode == icmp.ModePrivileged) }); err != nil {
				t.Fatal(err)
			}
			if detectErr != nil || detected != mode {
				t.Fatalf("DetectICMPMode in the client namespace = %v, %v; want %v", detected, detectErr, mode)
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					tc.fault(t)
					tg := &config.Target{
						Set: "netns", Host: tc.addr.String(), Name: tc.addr.String(), Probe: config.ProbeICMP,
						Timeout: tc.timeout,
						ICMP: &config.ICMPProbe{
							Count: tc.count, PacketInterval: config.Duration(20 * time.Millisecond), Size: 56,
						},
					}
					// A prober per case: its shared socket is opened by this
					// probe, inside the namespace, and closed before the
					// leak check.
					p := icmp.NewProber(res, mode, nil)
					r := netnsProbe(t, ns, p, tg, func() { netnsClose(p) })
					if r.ICMP == nil {
						t.Fatalf("probe.Result.ICMP is nil (reason %q: %v)", r.Reason, r.Err)
					}
					netnsCheckDuration(t, "probe", r.Duration, 0, tc.timeout+netnsSlack)
					c := check{sent: r.ICMP.Sent, received: r.ICMP.Received, dropped: ns.Dropped(t), res: r}
					tc.check(t, c)
					if tc.name == "30% loss" {
						lossDropped += c.dropped
						lossModes++
					}
				})
			}
		})
	}
	t.Run("loss happened", func(t *testing.T) {
		if lossModes < len(modes) {
			t.Skip("the loss case did not run in every mode")
		}
		if lossDropped == 0 {
			t.Errorf("nft dropped none of %d echo requests at 30%% loss", 20*lossModes)
		}
	})
}

func TestNetnsTCPBlackhole(t *testing.T) {
	ns := netnstest.New(t, netnstest.Options{})
	healthy := ns.ListenTCP(t, ns.HostAddr)
	victim := ns.ListenTCP(t, ns.AltAddr)
	p := tcp.NewProber(dns.New(dns.Options{}))
	target := func(ap netip.AddrPort) *config.Target {
		return &config.Target{
			Set: "netns", Host: ap.String(), Name: ap.Addr().String(), Port: int(ap.Port()),
			Probe: config.ProbeTCP, Timeout: time.Second, TCP: &config.TCPProbe{},
		}
	}

	tests := []struct {
		name       string
		fault      func(t *testing.T)
		wantVictim probe.Reason
	}{
		// Without a fault both listeners answer, so a timeout in the next
		// case can only come from the blackhole.
		{name: "no fault", fault: func(t *testing.T) { ns.Clear(t) }, wantVictim: probe.ReasonNone},
		{name: "victim blackholed", fault: func(t *testing.T) { ns.Blackhole(t, ns.AltAddr) }, wantVictim: probe.ReasonTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fault(t)
			// Both probes run at the same time; the healthy one must not
			// wait for the stuck one.
			victimCh, victimCheck := netnsStart(t, ns, p, target(victim))
			healthyCh, _ := netnsStart(t, ns, p, target(healthy))
			var wg sync.WaitGroup
			var h, v probe.Result
			wg.Go(func() { h = <-healthyCh })
			wg.Go(func() { v = <-victimCh })
			wg.Wait()
			victimCheck()

			if !h.Success {
				t.Errorf("healthy address: reason %q (%v), want success", h.Reason, h.Err)
			}
			netnsCheckDuration(t, "healthy connect", h.Duration, 0, netnsFast)
			if v.Success != (tc.wantVictim == probe.ReasonNone) || v.Reason != tc.wantVictim {
				t.Errorf("victim address: success=%v reason=%q (%v), want reason %q", v.Success, v.Reason, v.Err, tc.wantVictim)
			}
			if tc.wantVictim == probe.ReasonTimeout {
				netnsCheckDuration(t, "blackholed connect", v.Duration, time.Second-50*time.Millisecond, time.Second+netnsSlack)
				if ns.Dropped(t) == 0 {
					t.Error("nft dropped nothing: the blackhole did not see the connect")
				}
			} else {
				netnsCheckDuration(t, "victim connect", v.Duration, 0, netnsFast)
			}
		})
	}
}

func TestNetnsSSHBlackhole(t *testing.T) {
	ns := netnstest.New(t, netnstest.Options{})
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := dns.New(dns.Options{})

	const timeout = time.Second
	tests := []struct {
		name       string
		blackhole  bool
		reuse      bool
		wantReason probe.Reason
		minDur     time.Duration
		maxDur     time.Duration
	}{
		// Nothing listens on port 22: the host answers with a reset, so
		// the path works and only the blackhole turns it into a timeout.
		{name: "refused without fault", wantReason: probe.ReasonRefused, maxDur: netnsFast},
		{name: "blackholed", blackhole: true, wantReason: probe.ReasonTimeout, minDur: timeout - 50*time.Millisecond, maxDur: timeout + netnsSlack},
		{name: "blackholed with reuse_connections", blackhole: true, reuse: true, wantReason: probe.ReasonTimeout, minDur: timeout - 50*time.Millisecond, maxDur: timeout + netnsSlack},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.blackhole {
				ns.Blackhole(t, ns.AltAddr)
			} else {
				ns.Clear(t)
			}
			tg := &config.Target{
				Set: "netns", Host: ns.AltAddr.String(), Name: ns.AltAddr.String(), Port: 22,
				Probe: config.ProbeSSH, Timeout: timeout,
				SSH: &config.SSHProbe{
					User: "probe", PasswordFile: pwFile, InsecureSkipHostKeyVerification: true,
					ReuseConnections: tc.reuse,
					Commands:         []config.Command{{Name: "true", Run: "true"}},
				},
			}
			p := sshprober.NewProber(res, nil)
			r := netnsProbe(t, ns, p, tg, p.Close)
			if r.Success || r.Reason != tc.wantReason {
				t.Errorf("success=%v reason=%q (%v), want reason %q", r.Success, r.Reason, r.Err, tc.wantReason)
			}
			netnsCheckDuration(t, "ssh probe", r.Duration, tc.minDur, tc.maxDur)
			if r.SSH == nil {
				t.Fatal("probe.Result.SSH is nil")
			}
			if r.SSH.NewConnection || r.SSH.Handshake != 0 || r.SSH.Auth != 0 {
				t.Errorf("ssh result %+v: want no connection, handshake or auth", *r.SSH)
			}
			if len(r.SSH.Commands) != 1 || r.SSH.Commands[0].Ran {
				t.Errorf("commands %+v, want the one command reported as not run", r.SSH.Commands)
			}
			if tc.blackhole && ns.Dropped(t) == 0 {
				t.Error("nft dropped nothing: the blackhole did not see the connect")
			}
		})
	}
}

// TestNetnsSourceAddress probes the host from a client with two addresses:
// set "uplink1" sends from the client's first address, "uplink2" from its
// second, "default" leaves the choice to the kernel (the first, the one on
// the route). nftables counters on the host's input, one per source
// address and protocol, show which address each probe left from.
func TestNetnsSourceAddress(t *testing.T) {
	ns := netnstest.New(t, netnstest.Options{})
	second := ns.AddClientAddr(t)
	ns.CountSources(t, ns.ClientAddr, second)
	res := dnstest.Offline(t)
	sets := []struct {
		name string
		src  netip.Addr // configured; invalid for the kernel's choice
		from netip.Addr // where the packets must come from
	}{
		{"uplink1", ns.ClientAddr, ns.ClientAddr},
		{"uplink2", second, second},
		{"default", netip.Addr{}, ns.ClientAddr},
	}
	// counted runs probe and returns how many packets of proto each
	// client address sent meanwhile.
	counted := func(t *testing.T, proto string, probe func()) map[netip.Addr]int {
		t.Helper()
		before := map[netip.Addr]int{}
		for _, a := range []netip.Addr{ns.ClientAddr, second} {
			before[a] = ns.FromCount(t, a, proto)
		}
		probe()
		out := map[netip.Addr]int{}
		for a, n := range before {
			out[a] = ns.FromCount(t, a, proto) - n
		}
		return out
	}
	checkFrom := func(t *testing.T, got map[netip.Addr]int, from netip.Addr, exact int) {
		t.Helper()
		for a, n := range got {
			switch {
			case a != from && n != 0:
				t.Errorf("%d packets from %s, want none", n, a)
			case a == from && exact > 0 && n != exact:
				t.Errorf("%d packets from %s, want %d", n, a, exact)
			case a == from && n == 0:
				t.Errorf("no packet from %s", a)
			}
		}
	}

	t.Run("tcp", func(t *testing.T) {
		ap := ns.ListenTCP(t, ns.HostAddr)
		p := tcp.NewProber(res)
		for _, set := range sets {
			t.Run(set.name, func(t *testing.T) {
				tg := testutil.TCPTarget(set.name, ap.String(), testutil.WithTimeout(time.Second), testutil.WithSourceAddress(set.src))
				got := counted(t, "tcp", func() {
					if r := netnsProbe(t, ns, p, tg, nil); !r.Success {
						t.Errorf("reason %q (%v), want success", r.Reason, r.Err)
					}
				})
				checkFrom(t, got, set.from, 0)
			})
		}
	})

	t.Run("icmp", func(t *testing.T) {
		for _, mode := range []icmp.Mode{icmp.ModeUnprivileged, icmp.ModePrivileged} {
			t.Run(mode.String(), func(t *testing.T) {
				// The daemon sends ICMP through ProbeBatch, --once through
				// Probe: both go through the engine's socket per source.
				for _, batch := range []bool{false, true} {
					for _, set := range sets {
						t.Run(fmt.Sprintf("%s/batch=%v", set.name, batch), func(t *testing.T) {
							tg := testutil.ICMPTarget(set.name, ns.HostAddr.String(), testutil.WithICMP(3, 20*time.Millisecond),
								testutil.WithTimeout(2*time.Second), testutil.WithSourceAddress(set.src))
							// A prober per set: the socket for the source is
							// opened by this probe, inside the namespace.
							p := icmp.NewProber(res, mode, nil)
							got := counted(t, "icmp", func() {
								var r probe.Result
								if batch {
									now := time.Now()
									r = netnsBatch(t, ns, p, []probe.Request{{Target: tg, Due: now, Start: now, Timeout: tg.Timeout}})[0].Result
									p.Close()
								} else {
									r = netnsProbe(t, ns, p, tg, p.Close)
								}
								if !r.Success || r.ICMP == nil || r.ICMP.Received != 3 {
									t.Errorf("success %v result %+v (%v), want 3 replies", r.Success, r.ICMP, r.Err)
								}
							})
							checkFrom(t, got, set.from, 3)
						})
					}
				}
			})
		}
	})

	t.Run("ssh", func(t *testing.T) {
		var (
			ln     net.Listener
			lnErr  error
			mu     sync.Mutex
			remote []netip.Addr
		)
		if err := ns.InHost(func() { ln, lnErr = net.Listen("tcp", netip.AddrPortFrom(ns.HostAddr, 0).String()) }); err != nil {
			t.Fatal(err)
		}
		if lnErr != nil {
			t.Fatal(lnErr)
		}
		cfg := &ssh.ServerConfig{PasswordCallback: func(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if string(pw) == "secret" {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		}}
		cfg.AddHostKey(sshkeys.Generate(t, "ed25519").Signer)
		srv := sshserver.New(nil)
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = srv.Serve(ln, &sshserver.Host{
				Name:   "netns",
				Config: func() (*ssh.ServerConfig, error) { return cfg, nil },
				Exec:   sshserver.Builtin,
				PreHandshake: func(nc net.Conn) bool {
					mu.Lock()
					remote = append(remote, nc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
					mu.Unlock()
					return true
				},
			})
		}()
		t.Cleanup(func() {
			_ = srv.Close()
			<-served
		})
		pwFile := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, set := range sets {
			t.Run(set.name, func(t *testing.T) {
				tg := testutil.SSHTarget(set.name, ln.Addr().String(), testutil.WithTimeout(2*time.Second),
					testutil.WithSourceAddress(set.src), testutil.WithSSH(&config.SSHProbe{
						User: sshserver.DefaultUser, PasswordFile: pwFile, InsecureSkipHostKeyVerification: true,
						MaxOutputBytes: config.DefaultMaxOutputBytes,
						Commands:       []config.Command{{Name: "echo", Run: "echo hi"}},
					}))
				p := sshprober.NewProber(res, nil)
				defer p.Close()
				mu.Lock()
				remote = nil
				mu.Unlock()
				// The server's connection handlers outlive the probe, so
				// this probe runs without netnsProbe's leak check.
				got := counted(t, "tcp", func() {
					var r probe.Result
					if err := ns.InClient(func() {
						ctx, cancel := context.WithTimeout(context.Background(), tg.Timeout)
						defer cancel()
						r = p.Probe(ctx, tg)
					}); err != nil {
						t.Fatal(err)
					}
					if !r.Success {
						t.Errorf("reason %q (%v), want success", r.Reason, r.Err)
					}
				})
				checkFrom(t, got, set.from, 0)
				mu.Lock()
				defer mu.Unlock()
				if diff := cmp.Diff([]netip.Addr{set.from}, remote, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
					t.Errorf("connections accepted from (-want +got):\n%s", diff)
				}
			})
		}
	})
}
