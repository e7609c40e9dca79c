package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/knownhosts"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestSSHProbeKnownHostsIndex runs real handshakes through the index: a
// host among many lines is verified, a changed host key fails with reason
// hostkey before authentication, and a server with two host keys is asked
// for the type the file lists.
func TestSSHProbeKnownHostsIndex(t *testing.T) {
	ec := sshkeys.Generate(t, "ecdsa")
	f := newFixture(t, sshserver.TestOptions{HostSigners: []ssh.Signer{ec.Signer}})
	other := sshkeys.Generate(t, "ed25519")
	var filler strings.Builder
	for i := range 500 {
		fmt.Fprintf(&filler, "[127.1.%d.%d]:%d %s", i/256, i%256, f.srv.Port, ssh.MarshalAuthorizedKey(other.Pub))
	}
	tests := []struct {
		name  string
		lines string
		want  probe.Reason
	}{
		{"listed among many", filler.String() + knownHostsFor(f.srv.Port, f.host.Pub), probe.ReasonNone},
		{"ecdsa listed first", knownHostsFor(f.srv.Port, ec.Pub) + knownHostsFor(f.srv.Port, f.host.Pub), probe.ReasonNone},
		{"changed key", filler.String() + knownHostsFor(f.srv.Port, other.Pub), probe.ReasonHostKey},
		{"other port only", strings.Replace(knownHostsFor(f.srv.Port, f.host.Pub), fmt.Sprint(f.srv.Port), "1", 1), probe.ReasonHostKey},
	}
	p := newProber(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
			cfg.KnownHostsFile = writeFile(t, f.dir, fmt.Sprintf("kh_index_%d", i), []byte(tt.lines))
			attempts := f.srv.AuthAttempts()
			res := p.Probe(context.Background(), testTarget(f.srv.Port, cfg))
			checkReason(t, res, tt.want)
			kh, err := p.files.hostKey(cfg)
			if db, ok := kh.(*knownhosts.DB); err != nil || !ok || !db.Indexed() {
				t.Fatalf("file not indexed: %v", err)
			}
			if tt.want == probe.ReasonHostKey {
				if !errors.Is(res.Err, errHostKey) {
					t.Errorf("error %v does not wrap errHostKey", res.Err)
				}
				if got := f.srv.AuthAttempts(); got != attempts {
					t.Errorf("%d auth requests sent to a server with a bad host key", got-attempts)
				}
			}
		})
	}
}

// dropProxy forwards TCP connections to a backend. After drop, the
// connections it carried stop delivering the server's bytes, and the next
// byte a client sends on one is answered with a reset: the server side has
// silently forgotten the connection, as after a reboot or a NAT timeout,
// and the client cannot tell until it sends something. Connections
// accepted later are forwarded normally.
type dropProxy struct {
	ln      net.Listener
	backend string

	// mu guards conns.
	mu    sync.Mutex
	conns []*proxiedConn

	wg sync.WaitGroup
}

// proxiedConn is one forwarded connection.
type proxiedConn struct {
	client, server *net.TCPConn
	// dropped is closed by drop.
	dropped     chan struct{}
	dropPending bool
}

// startDropProxy starts a proxy to backend; it is closed on cleanup.
func startDropProxy(t testing.TB, backend string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.client.Close()
			_ = c.server.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// port returns the proxy's port.
func (p *dropProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// serve accepts and forwards connections.
func (p *dropProxy) serve() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", p.backend)
		if err != nil {
			_ = nc.Close()
			continue
		}
		c := &proxiedConn{client: nc.(*net.TCPConn), server: sc.(*net.TCPConn), dropped: make(chan struct{}), dropPending: true}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.upstream(c)
		go p.downstream(c)
	}
}

// upstream copies client to server; after drop, the first bytes from the
// client are answered with a reset.
func (p *dropProxy) upstream(c *proxiedConn) {
	defer p.wg.Done()
	var buf [32 << 10]byte
	for {
		n, err := c.client.Read(buf[:])
		select {
		case <-c.dropped:
			_ = c.client.SetLinger(0)
			_ = c.client.Close()
			_ = c.server.Close()
			return
		default:
		}
		if n > 0 {
			if _, werr := c.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = c.server.CloseWrite()
			return
		}
	}
}

// downstream copies server to client until drop, then discards.
func (p *dropProxy) downstream(c *proxiedConn) {
	defer p.wg.Done()
	var buf [32 << 10]byte
	for {
		n, err := c.server.Read(buf[:])
		select {
		case <-c.dropped:
			n = 0
		default:
		}
		if n > 0 {
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drop makes every connection carried so far a silently dead one.
func (p *dropProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if c.dropPending {
			c.dropPending = false
			close(c.dropped)
		}
	}
}

// TestSSHProbeReuseSilentDrop checks that a pooled connection the server
// has silently forgotten right after a successful poll is replaced within
// the next probe: its session open fails (the keepalive before it is
// skipped for a connection used moments ago) and the probe reconnects.
func TestSSHProbeReuseSilentDrop(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	proxy := startDropProxy(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(f.srv.Port)))
	f.knownHosts = writeFile(t, f.dir, "known_hosts_proxy", []byte(knownHostsFor(proxy.port(), f.host.Pub)))
	p := newProber(t)
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := testTarget(proxy.port(), cfg)

	for i := range 3 {
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonNone)
		if got, want := res.SSH.NewConnection, i == 0; got != want {
			t.Fatalf("probe %d: NewConnection=%v, want %v", i, got, want)
		}
		proxy.drop()
		res = p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonNone)
		if !res.SSH.NewConnection || res.SSH.Connect <= 0 {
			t.Fatalf("probe after drop %d: NewConnection=%v connect=%v", i, res.SSH.NewConnection, res.SSH.Connect)
		}
		if got := res.SSH.Commands[0]; got.ExitStatus != 0 || got.Bytes != 3 {
			t.Errorf("command after reconnect: %+v", got)
		}
	}
	if got, want := p.ConnectionsOpened(), uint64(4); got != want {
		t.Errorf("ConnectionsOpened = %d, want %d", got, want)
	}
	if got := p.keepalives.Load(); got != 0 {
		t.Errorf("%d keepalives sent on connections used within the interval", got)
	}
}

// TestSSHProbeReuseKeepalive checks when a pooled connection is checked
// with a keepalive before use: not while it completed a session within the
// target's interval, but once it has been idle longer, and never for a new
// connection.
func TestSSHProbeReuseKeepalive(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	clock := testutil.NewClock(time.Unix(1e9, 0))
	p.now = clock.Now
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := testTarget(f.srv.Port, cfg)
	tg.Interval = 10 * time.Second

	steps := []struct {
		name       string
		advance    time.Duration
		command    string
		keepalives uint64
		want       probe.Reason
	}{
		{"first probe connects", 0, "echo hi", 0, probe.ReasonNone},
		{"right after", time.Second, "echo hi", 0, probe.ReasonNone},
		{"just within the interval", 10*time.Second - time.Nanosecond, "echo hi", 0, probe.ReasonNone},
		{"idle one interval", 10 * time.Second, "echo hi", 1, probe.ReasonNone},
		{"used again just now", time.Second, "echo hi", 0, probe.ReasonNone},
		// A non-zero exit still proves the connection works.
		{"failing command", time.Second, "exit 3", 0, probe.ReasonCommand},
		{"after a failing command", time.Second, "echo hi", 0, probe.ReasonNone},
		// A session ending without exit status is checked at once; the
		// answer proves the connection, so the next use needs none.
		{"session without exit status", time.Second, "noexit", 1, probe.ReasonNone},
		{"after a session without exit status", time.Second, "echo hi", 0, probe.ReasonNone},
		{"idle long", time.Hour, "echo hi", 1, probe.ReasonNone},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		before := p.keepalives.Load()
		tg.SSH = f.cfg(config.Command{Name: "c", Run: s.command})
		tg.SSH.ReuseConnections = true
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, s.want)
		if got := p.keepalives.Load() - before; got != s.keepalives {
			t.Errorf("%s: %d keepalives, want %d", s.name, got, s.keepalives)
		}
		if res.SSH.NewConnection != (s.name == "first probe connects") {
			t.Errorf("%s: NewConnection=%v", s.name, res.SSH.NewConnection)
		}
	}
	// A probe without commands has nothing but the keepalive to show the
	// connection works.
	tg.SSH = f.cfg()
	tg.SSH.ReuseConnections = true
	before := p.keepalives.Load()
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	if got := p.keepalives.Load() - before; got != 1 {
		t.Errorf("probe without commands: %d keepalives, want 1", got)
	}
	if got := p.ConnectionsOpened(); got != 1 {
		t.Errorf("ConnectionsOpened = %d, want 1", got)
	}
}

// TestSSHDStdinEOF checks that commands see end of input at once (the
// prober closes stdin itself instead of letting the library copy an empty
// reader), on fresh and on reused connections against OpenSSH.
func TestSSHDStdinEOF(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}})
	k := s.ClientKey(t, "id", sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	kh := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	p := sshdNewProber(t)
	for _, reuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("reuse=%v", reuse), func(t *testing.T) {
			cfg := &config.SSHProbe{
				User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: kh, ReuseConnections: reuse,
				Commands: []config.Command{
					{Name: "stdin", Run: "wc -c", Timeout: config.Duration(5 * time.Second)},
					{Name: "stdin again", Run: "cat; echo done", Timeout: config.Duration(5 * time.Second)},
				},
			}
			for i := range 2 {
				res := p.Probe(context.Background(), sshdTarget(s, cfg))
				checkReason(t, res, probe.ReasonNone)
				for j, want := range []string{"0\n", "done\n"} {
					if got := res.SSH.Commands[j]; got.Hash != testHash([]byte(want)) || got.ExitStatus != 0 {
						t.Errorf("probe %d command %d: %+v, want output %q", i, j, got, want)
					}
				}
				if reuse && i > 0 && res.SSH.NewConnection {
					t.Errorf("probe %d: connection not reused", i)
				}
			}
		})
	}
}
