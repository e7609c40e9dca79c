package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// sshVerdict renders a host key callback result for comparison: "ok", or
// the error class and the lines it names.
func sshVerdict(err error) string {
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ke):
		if len(ke.Want) == 0 {
			return "unknown host"
		}
		parts := make([]string, len(ke.Want))
		for i, w := range ke.Want {
			parts[i] = w.String()
		}
		return "mismatch, want " + strings.Join(parts, "; ")
	case errors.As(err, &re):
		return "revoked " + re.Revoked.String()
	default:
		return "error " + err.Error()
	}
}

// sshKeysString renders keys for comparison.
func sshKeysString(keys []ssh.PublicKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(ssh.MarshalAuthorizedKey(k))
	}
	return out
}

// TestKnownHostsIndex checks that sshKnownHosts.check and known give the
// verdicts and key lists of the x/crypto knownhosts callback for every
// combination of file, host name, remote address and presented key, and
// that plain files take the index (not the callback) to get them.
func TestKnownHostsIndex(t *testing.T) {
	ed1, ed2 := sshGenKey(t, "ed25519"), sshGenKey(t, "ed25519")
	ec, rsaKey := sshGenKey(t, "ecdsa"), sshGenKey(t, "rsa")
	ca := sshGenKey(t, "ed25519")
	cert := sshSignCert(t, ca, ed1.pub, ssh.HostCert, "127.0.0.1", "::1")
	unlisted := sshGenKey(t, "ed25519")
	line := func(pattern string, k sshTestKey) string {
		return pattern + " " + string(ssh.MarshalAuthorizedKey(k.pub))
	}
	hashed := func(hostport string) string { return knownhosts.HashHostname(knownhosts.Normalize(hostport)) }

	files := []struct {
		name  string
		text  string
		plain bool
	}{
		{"empty", "", true},
		{"comments only", "# nothing\n\n   \n", true},
		{"one host port 22", line("127.0.0.1", ed1), true},
		{"one host other port", line("[127.0.0.1]:2222", ed1), true},
		{"same host two ports", line("[127.0.0.1]:2222", ed1) + line("127.0.0.1", ed2), true},
		{"bracketed port 22", line("[127.0.0.1]:22", ed1), true},
		{"unbracketed host:port", line("127.0.0.1:2222", ed2), true},
		{"several keys per host", line("[127.0.0.1]:2222", ed1) + line("[127.0.0.1]:2222", ec) +
			line("[127.0.0.1]:2222", rsaKey), true},
		{"same key on two lines", line("127.0.0.1", ed1) + line("127.0.0.1,localhost", ed1), true},
		{"several patterns, duplicates and empties", line("127.0.0.1,,[127.0.0.1]:22,db.invalid,[db.invalid]:2222", ed1) +
			line("db.invalid", ec), true},
		{"ipv6", line("::1", ed1) + line("[::1]:2222", ed2) + line("[fe80::1%lo]:22", ec), true},
		{"ipv6 unbracketed with colons", line("fe80::2", ed1), true},
		{"empty bracketed host", line("[]:22", ed1), true},
		{"tabs, comment field and CRLF", "127.0.0.1\t" + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed1.pub))) +
			" a comment\r\n  [127.0.0.1]:2222  " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ec.pub))) + "\r\n", true},
		{"case differs", line("DB.invalid", ed1), true},
		{"hashed", hashed("127.0.0.1:2222") + " " + string(ssh.MarshalAuthorizedKey(ed1.pub)) +
			hashed("127.0.0.1:22") + " " + string(ssh.MarshalAuthorizedKey(ec.pub)), false},
		{"plain and hashed", line("[127.0.0.1]:2222", ed2) + hashed("127.0.0.1:2222") + " " +
			string(ssh.MarshalAuthorizedKey(ed1.pub)), false},
		{"wildcard", line("127.0.0.*", ed1) + line("[127.0.0.?]:2222", ed2), false},
		{"question mark only", line("[127.0.0.?]:2222", ed1), false},
		{"wildcard over exact", line("[127.0.0.1]:2222", ed1) + line("[127.*]:2222", ec), false},
		{"negated", line("127.0.0.*,!127.0.0.2", ed1) + line("[::1]:2222,![::1]:2222", ed2), false},
		{"cert authority", "@cert-authority 127.0.0.1,[127.0.0.1]:2222 " + string(ssh.MarshalAuthorizedKey(ca.pub)) +
			line("[127.0.0.1]:2222", ec), false},
		// knownhosts matches @cert-authority lines as plain keys too.
		{"cert authority key as host key", "@cert-authority [127.0.0.1]:2222 " + string(ssh.MarshalAuthorizedKey(ed1.pub)), false},
		{"revoked", line("[127.0.0.1]:2222", ed1) + line("[127.0.0.1]:2222", ec) +
			"@revoked * " + string(ssh.MarshalAuthorizedKey(ed1.pub)), false},
		{"revoked unlisted", line("127.0.0.1", ed1) + "@revoked nohost.invalid " + string(ssh.MarshalAuthorizedKey(ed2.pub)), false},
	}
	hostnames := []string{
		"127.0.0.1:22", "127.0.0.1:2222", "127.0.0.1:2200", "127.0.0.2:22", "127.0.0.2:2222",
		"[127.0.0.1]:22", "[::1]:22", "[::1]:2222", "[fe80::1%lo]:22", "[fe80::2]:22",
		"db.invalid:22", "db.invalid:2222", "DB.invalid:22", "localhost:22", "[]:22", ":22",
		"127.0.0.1", "::1", "", // not host:port, or empty: the callback decides
	}
	remotes := []net.Addr{
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:2222")),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:22")),
		&net.UnixAddr{Name: "/nonexistent", Net: "unix"},
	}
	keys := []struct {
		name string
		key  ssh.PublicKey
	}{
		{"ed25519 #1", ed1.pub}, {"ed25519 #2", ed2.pub}, {"ecdsa", ec.pub}, {"rsa", rsaKey.pub},
		{"unlisted", unlisted.pub}, {"host certificate", cert},
	}

	dir := t.TempDir()
	for i, f := range files {
		t.Run(f.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("known_hosts_%d", i))
			if err := os.WriteFile(path, []byte(f.text), 0o600); err != nil {
				t.Fatal(err)
			}
			kh, err := sshLoadKnownHosts(path)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if kh.plain != f.plain || (kh.index != nil) != f.plain {
				t.Fatalf("plain=%v index=%v, want plain=%v", kh.plain, kh.index != nil, f.plain)
			}
			ref, err := knownhosts.New(path)
			if err != nil {
				t.Fatal(err)
			}
			// A callback that must not run: for plain files every
			// question with a host:port and a TCP remote is answered from
			// the index.
			var fallbacks int
			kh.callback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
				fallbacks++
				return ref(hostname, remote, key)
			}
			for _, hn := range hostnames {
				for ri, remote := range remotes {
					answerable := hn != "" && ri < 2
					if _, _, err := net.SplitHostPort(hn); err != nil {
						answerable = false
					}
					// known: the key list the algorithm order is built from.
					var want []ssh.PublicKey
					var ke *knownhosts.KeyError
					if err := ref(hn, remote, kh.probe); errors.As(err, &ke) {
						for _, w := range ke.Want {
							want = append(want, w.Key)
						}
					}
					before := fallbacks
					if diff := cmp.Diff(sshKeysString(want), sshKeysString(kh.known(hn, remote))); diff != "" {
						t.Errorf("known(%q, %v) (-callback +ours):\n%s", hn, remote, diff)
					}
					if f.plain && answerable && fallbacks != before {
						t.Errorf("known(%q, %v) used the callback on a plain file", hn, remote)
					}
					for _, k := range keys {
						before := fallbacks
						got, want := sshVerdict(kh.check(hn, remote, k.key)), sshVerdict(ref(hn, remote, k.key))
						if got != want {
							t.Errorf("check(%q, %v, %s) = %s, callback says %s", hn, remote, k.name, got, want)
						}
						_, isCert := k.key.(*ssh.Certificate)
						if f.plain && answerable && !isCert && fallbacks != before {
							t.Errorf("check(%q, %v, %s) used the callback on a plain file", hn, remote, k.name)
						}
					}
				}
			}
			// Files that are not plain are matched by the callback once
			// per host, then from the memo.
			if !f.plain {
				hn, remote := "127.0.0.1:2222", remotes[0]
				_ = kh.check(hn, remote, ed1.pub)
				before := fallbacks
				for range 3 {
					_ = kh.check(hn, remote, ec.pub)
					_ = kh.known(hn, remote)
				}
				if fallbacks != before {
					t.Errorf("memoised host %s used the callback %d more times", hn, fallbacks-before)
				}
			}
		})
	}
}

// TestKnownHostsIndexErrors checks that a file knownhosts rejects is a
// configuration error of ours too, for each way a line can be malformed.
func TestKnownHostsIndexErrors(t *testing.T) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshGenKey(t, "ed25519").pub)))
	tests := []struct {
		name string
		text string
	}{
		{"missing key", "127.0.0.1\n"},
		{"missing key blob", "127.0.0.1 ssh-ed25519\n"},
		{"bad base64", "127.0.0.1 ssh-ed25519 !!!\n"},
		{"type mismatch", "127.0.0.1 ssh-rsa " + strings.Fields(key)[1] + "\n"},
		{"double marker", "@cert-authority @revoked * " + key + "\n"},
		{"lone negation", "!,127.0.0.1 " + key + "\n"},
		{"bad bracket", "[127.0.0.1 " + key + "\n"},
		{"bad hash", "|2|abc|def " + key + "\n"},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("kh%d", i))
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := knownhosts.New(path); err == nil {
				t.Fatal("knownhosts accepts the file; the case tests nothing")
			}
			_, err := sshLoadKnownHosts(path)
			if !errors.Is(err, errSSHConfig) {
				t.Fatalf("got %v, want a configuration error", err)
			}
			// Our own parser must reject it too, or a file replaced
			// between the two reads could be half understood.
			if _, err := sshIndexKnownHosts([]byte(tt.text), path); err == nil && tt.name != "bad hash" {
				t.Errorf("index accepts the file")
			}
		})
	}
}

// TestSSHProbeKnownHostsIndex runs real handshakes through the index: a
// host among many lines is verified, a changed host key fails with reason
// hostkey before authentication, and a server with two host keys is asked
// for the type the file lists.
func TestSSHProbeKnownHostsIndex(t *testing.T) {
	ec := sshGenKey(t, "ecdsa")
	f := sshNewFixture(t, sshTestServerConfig{hostSigners: []ssh.Signer{ec.signer}})
	other := sshGenKey(t, "ed25519")
	var filler strings.Builder
	for i := range 500 {
		fmt.Fprintf(&filler, "[127.1.%d.%d]:%d %s", i/256, i%256, f.srv.port, ssh.MarshalAuthorizedKey(other.pub))
	}
	tests := []struct {
		name  string
		lines string
		want  probe.Reason
	}{
		{"listed among many", filler.String() + sshKnownHostsFor(f.srv.port, f.host.pub), probe.ReasonNone},
		{"ecdsa listed first", sshKnownHostsFor(f.srv.port, ec.pub) + sshKnownHostsFor(f.srv.port, f.host.pub), probe.ReasonNone},
		{"changed key", filler.String() + sshKnownHostsFor(f.srv.port, other.pub), probe.ReasonHostKey},
		{"other port only", strings.Replace(sshKnownHostsFor(f.srv.port, f.host.pub), fmt.Sprint(f.srv.port), "1", 1), probe.ReasonHostKey},
	}
	p := sshNewProber(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
			cfg.KnownHostsFile = sshWriteFile(t, f.dir, fmt.Sprintf("kh_index_%d", i), []byte(tt.lines))
			attempts := f.srv.authAttempts.Load()
			res := p.Probe(context.Background(), sshTarget(f.srv.port, cfg))
			sshCheck(t, res, tt.want)
			kh, err := p.files.hostKey(cfg)
			if err != nil || !kh.plain {
				t.Fatalf("file not indexed: %v", err)
			}
			if tt.want == probe.ReasonHostKey {
				if !errors.Is(res.Err, errSSHHostKey) {
					t.Errorf("error %v does not wrap errSSHHostKey", res.Err)
				}
				if got := f.srv.authAttempts.Load(); got != attempts {
					t.Errorf("%d auth requests sent to a server with a bad host key", got-attempts)
				}
			}
		})
	}
}

// sshDropProxy forwards TCP connections to a backend. After drop, the
// connections it carried stop delivering the server's bytes, and the next
// byte a client sends on one is answered with a reset: the server side has
// silently forgotten the connection, as after a reboot or a NAT timeout,
// and the client cannot tell until it sends something. Connections
// accepted later are forwarded normally.
type sshDropProxy struct {
	ln      net.Listener
	backend string

	// mu guards conns.
	mu    sync.Mutex
	conns []*sshProxiedConn

	wg sync.WaitGroup
}

// sshProxiedConn is one forwarded connection.
type sshProxiedConn struct {
	client, server *net.TCPConn
	// dropped is closed by drop.
	dropped     chan struct{}
	dropPending bool
}

// sshStartDropProxy starts a proxy to backend; it is closed on cleanup.
func sshStartDropProxy(t testing.TB, backend string) *sshDropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &sshDropProxy{ln: ln, backend: backend}
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
func (p *sshDropProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// serve accepts and forwards connections.
func (p *sshDropProxy) serve() {
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
		c := &sshProxiedConn{client: nc.(*net.TCPConn), server: sc.(*net.TCPConn), dropped: make(chan struct{}), dropPending: true}
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
func (p *sshDropProxy) upstream(c *sshProxiedConn) {
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
func (p *sshDropProxy) downstream(c *sshProxiedConn) {
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
func (p *sshDropProxy) drop() {
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
	f := sshNewFixture(t, sshTestServerConfig{})
	proxy := sshStartDropProxy(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(f.srv.port)))
	f.knownHosts = sshWriteFile(t, f.dir, "known_hosts_proxy", []byte(sshKnownHostsFor(proxy.port(), f.host.pub)))
	p := sshNewProber(t)
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := sshTarget(proxy.port(), cfg)

	for i := range 3 {
		res := p.Probe(context.Background(), tg)
		sshCheck(t, res, probe.ReasonNone)
		if got, want := res.SSH.NewConnection, i == 0; got != want {
			t.Fatalf("probe %d: NewConnection=%v, want %v", i, got, want)
		}
		proxy.drop()
		res = p.Probe(context.Background(), tg)
		sshCheck(t, res, probe.ReasonNone)
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
	f := sshNewFixture(t, sshTestServerConfig{})
	p := sshNewProber(t)
	clock := &sshFakeClock{now: time.Unix(1e9, 0)}
	p.now = clock.Now
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := sshTarget(f.srv.port, cfg)
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
		// A session ending without exit status is checked at once, and
		// the connection once more before the next use.
		{"session without exit status", time.Second, "noexit", 1, probe.ReasonSession},
		{"after a broken session", time.Second, "echo hi", 1, probe.ReasonNone},
		{"idle long", time.Hour, "echo hi", 1, probe.ReasonNone},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		before := p.keepalives.Load()
		tg.SSH = f.cfg(config.Command{Name: "c", Run: s.command})
		tg.SSH.ReuseConnections = true
		res := p.Probe(context.Background(), tg)
		sshCheck(t, res, s.want)
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
	sshCheck(t, p.Probe(context.Background(), tg), probe.ReasonNone)
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
				sshCheck(t, res, probe.ReasonNone)
				for j, want := range []string{"0\n", "done\n"} {
					if got := res.SSH.Commands[j]; got.Hash != sshHashOf([]byte(want)) || got.ExitStatus != 0 {
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

// sshKnownHostsBenchFile writes a known_hosts file of n hosts on port 2222,
// hashed or plain, and returns its path and the host:port and key of the
// host in its middle.
func sshKnownHostsBenchFile(b *testing.B, n int, hashed bool) (path, hostport string, key ssh.PublicKey) {
	keys := make([]ssh.PublicKey, 16)
	for i := range keys {
		keys[i] = sshGenKey(b, "ed25519").pub
	}
	var sb strings.Builder
	for i := range n {
		hp := fmt.Sprintf("127.%d.%d.%d:2222", 10+i/65536, i/256%256, i%256)
		pattern := knownhosts.Normalize(hp)
		if hashed {
			pattern = knownhosts.HashHostname(pattern)
		}
		sb.WriteString(knownhosts.Line([]string{pattern}, keys[i%len(keys)]) + "\n")
		if i == n/2 {
			hostport, key = hp, keys[i%len(keys)]
		}
	}
	path = filepath.Join(b.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path, hostport, key
}

// BenchmarkKnownHostsLookup measures what one fresh connection spends on
// known_hosts with 10,000 hosts: choosing the host key algorithms and
// verifying the key. "callback" is the x/crypto knownhosts scan the prober
// used before (twice per connection), "index" the lookup it uses now.
func BenchmarkKnownHostsLookup(b *testing.B) {
	const n = 10000
	for _, hashed := range []bool{false, true} {
		path, hp, key := sshKnownHostsBenchFile(b, n, hashed)
		kh, err := sshLoadKnownHosts(path)
		if err != nil {
			b.Fatal(err)
		}
		if kh.plain == hashed {
			b.Fatalf("hashed=%v file has plain=%v", hashed, kh.plain)
		}
		remote := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(hp))
		form := map[bool]string{false: "plain", true: "hashed"}[hashed]
		b.Run(form+"/callback", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var ke *knownhosts.KeyError
				if err := kh.callback(hp, remote, kh.probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
					b.Fatalf("probe: %v", err)
				}
				if err := kh.callback(hp, remote, key); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(form+"/index", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if algos := kh.hostKeyAlgorithms(hp, remote); len(algos) == 0 {
					b.Fatal("no algorithms")
				}
				if err := kh.check(hp, remote, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
