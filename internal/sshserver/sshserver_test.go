package sshserver_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// newSigner returns a fresh ed25519 signer.
func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dial logs in to s as user with auth, checking the host key.
func dial(t *testing.T, s *sshserver.TestServer, host ssh.PublicKey, user string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", s.HostPort(), &ssh.ClientConfig{
		User: user, Auth: auth, HostKeyCallback: ssh.FixedHostKey(host), Timeout: 5 * time.Second,
	})
}

// runResult is what one command did.
type runResult struct {
	stdout, stderr string
	status         int // -1: no exit status
	signal         string
}

// run runs cmd in a new session of c.
func run(t *testing.T, c *ssh.Client, cmd string) (runResult, error) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		return runResult{}, err
	}
	defer func() { _ = sess.Close() }()
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	err = sess.Run(cmd)
	r := runResult{status: 0}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case errors.As(err, &ee):
		r.status, r.signal, err = ee.ExitStatus(), ee.Signal(), nil
	case errors.As(err, &missing):
		r.status, err = -1, nil
	}
	r.stdout, r.stderr = out.String(), errOut.String()
	return r, err
}

func TestAuthentication(t *testing.T) {
	host := newSigner(t)
	user, other, caKey := newSigner(t), newSigner(t), newSigner(t)
	cert := &ssh.Certificate{
		Key: other.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{sshserver.DefaultUser},
		ValidBefore: ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, caKey); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, other)
	if err != nil {
		t.Fatal(err)
	}
	kbd := func(answer string) ssh.AuthMethod {
		return ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
			return slices.Repeat([]string{answer}, len(questions)), nil
		})
	}
	tests := []struct {
		name   string
		opts   sshserver.TestOptions
		user   string
		auth   ssh.AuthMethod
		wantOK bool
	}{
		{"authorized key", sshserver.TestOptions{AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}}, "", ssh.PublicKeys(user), true},
		{"other key", sshserver.TestOptions{AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}}, "", ssh.PublicKeys(other), false},
		{"wrong user", sshserver.TestOptions{AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}}, "root", ssh.PublicKeys(user), false},
		{"named user", sshserver.TestOptions{User: "fleet", AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}}, "fleet", ssh.PublicKeys(user), true},
		{"certificate", sshserver.TestOptions{UserCA: caKey.PublicKey()}, "", ssh.PublicKeys(certSigner), true},
		{"certificate of untrusted ca", sshserver.TestOptions{UserCA: user.PublicKey()}, "", ssh.PublicKeys(certSigner), false},
		{"password", sshserver.TestOptions{Password: "sesame"}, "", ssh.Password("sesame"), true},
		{"wrong password", sshserver.TestOptions{Password: "sesame"}, "", ssh.Password("open"), false},
		{"keyboard-interactive", sshserver.TestOptions{Password: "sesame", KeyboardInteractive: true}, "", kbd("sesame"), true},
		{"keyboard-interactive off", sshserver.TestOptions{Password: "sesame"}, "", kbd("sesame"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.HostSigners = []ssh.Signer{host}
			s := testutil.StartSSHServer(t, tt.opts)
			name := tt.user
			if name == "" {
				name = sshserver.DefaultUser
			}
			c, err := dial(t, s, host.PublicKey(), name, tt.auth)
			if err == nil {
				_ = c.Close()
			}
			if gotOK := err == nil; gotOK != tt.wantOK {
				t.Fatalf("login err = %v, want success %v", err, tt.wantOK)
			}
			if s.AuthAttempts() == 0 {
				t.Error("no authentication attempt counted")
			}
			if s.Accepted() != 1 {
				t.Errorf("Accepted = %d, want 1", s.Accepted())
			}
		})
	}
}

func TestOfferedRecordsRejectedSecrets(t *testing.T) {
	host := newSigner(t)
	s := testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{host}})
	_, err := dial(t, s, host.PublicKey(), sshserver.DefaultUser, ssh.PublicKeys(newSigner(t)), ssh.Password("planted"))
	if err == nil {
		t.Fatal("login to a server without credentials succeeded")
	}
	pw, keys := s.Offered()
	if !slices.Equal(pw, []string{"planted"}) || keys != 1 {
		t.Errorf("Offered = %q, %d; want [planted], 1", pw, keys)
	}
}

func TestBuiltinCommands(t *testing.T) {
	host, user := newSigner(t), newSigner(t)
	s := testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{host}, AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}})
	c, err := dial(t, s, host.PublicKey(), sshserver.DefaultUser, ssh.PublicKeys(user))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	tests := []struct {
		cmd     string
		want    runResult
		wantErr bool
	}{
		{cmd: "echo hello", want: runResult{stdout: "hello\n"}},
		{cmd: "printf a b", want: runResult{stdout: "a b"}},
		{cmd: "exit 3", want: runResult{status: 3}},
		{cmd: "flood 100000", want: runResult{stdout: strings.Repeat("x", 100000)}},
		{cmd: "errflood 10", want: runResult{stderr: strings.Repeat("x", 10)}},
		{cmd: "signal", want: runResult{status: 128 + 9, signal: "KILL"}},
		{cmd: "noexit", want: runResult{status: -1}},
		{cmd: "nonsense", want: runResult{stderr: "unknown command \"nonsense\"\n", status: 127}},
		{cmd: "reject", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			got, err := run(t, c, tt.cmd)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got != tt.want {
				t.Errorf("run = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSessionLimitAndCuts(t *testing.T) {
	host, user := newSigner(t), newSigner(t)
	s := testutil.StartSSHServer(t, sshserver.TestOptions{
		HostSigners: []ssh.Signer{host}, AuthorizedKeys: []ssh.PublicKey{user.PublicKey()}, MaxSessions: 1,
	})
	login := func() *ssh.Client {
		c, err := dial(t, s, host.PublicKey(), sshserver.DefaultUser, ssh.PublicKeys(user))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	t.Run("max sessions", func(t *testing.T) {
		c := login()
		if _, err := run(t, c, "echo one"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.NewSession(); err == nil {
			t.Error("second session on a connection limited to one was accepted")
		}
	})
	t.Run("drop", func(t *testing.T) {
		if r, err := run(t, login(), "drop"); err == nil && r.status != -1 {
			t.Errorf("drop ended the session with %+v, want an error or no exit status", r)
		}
	})
	t.Run("sleep until connections are cut", func(t *testing.T) {
		c := login()
		before := s.Sessions()
		done := make(chan error, 1)
		go func() {
			r, err := run(t, c, "sleep forever")
			if err == nil && r.status != -1 {
				err = errors.New("sleep exited")
			}
			done <- err
		}()
		deadline := time.Now().Add(5 * time.Second)
		for s.Sessions() == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		s.CloseConns()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sleep after CloseConns: %v, want the session cut without exit status", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("sleep still running after CloseConns")
		}
	})
}

func TestRawServer(t *testing.T) {
	tests := []struct {
		name      string
		handle    func(net.Conn)
		wantLine  string
		wantEOF   bool
		sendBytes int
	}{
		{name: "banner then silence", handle: sshserver.Greet("SSH-2.0-OpenSSH_9.6\r\n"), wantLine: "SSH-2.0-OpenSSH_9.6\r\n", sendBytes: 5},
		{name: "garbage then close", handle: sshserver.GreetAndClose("HTTP/1.1 400 Bad Request\r\n"), wantLine: "HTTP/1.1 400 Bad Request\r\n", wantEOF: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testutil.StartRawServer(t, tt.handle)
			c, err := net.DialTimeout("tcp", r.HostPort(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil || line != tt.wantLine {
				t.Fatalf("first line = %q, %v; want %q", line, err, tt.wantLine)
			}
			if tt.wantEOF {
				if _, err := br.ReadByte(); err == nil {
					t.Error("connection still open after the greeting")
				}
				return
			}
			if _, err := c.Write(make([]byte, tt.sendBytes)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for r.Received() < int64(tt.sendBytes) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if r.Received() != int64(tt.sendBytes) || r.Accepted() != 1 {
				t.Errorf("Received = %d, Accepted = %d; want %d, 1", r.Received(), r.Accepted(), tt.sendBytes)
			}
		})
	}
}

// startJump serves a jump host on a loopback port whose direct-tcpip
// channels go where dial says (nil: the host refuses them). It returns the
// address and a stop function that closes the server and waits for it.
func startJump(t *testing.T, host, user ssh.Signer, dial func(addr string) (net.Conn, error)) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(key.Marshal(), user.PublicKey().Marshal()) {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(host)
	srv := sshserver.New(nil)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln, &sshserver.Host{
			Name:        "jump",
			Config:      func() (*ssh.ServerConfig, error) { return cfg, nil },
			DirectTCPIP: dial,
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = srv.Close()
			<-served
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// TestDirectTCPIP checks the jump host mode: a direct-tcpip channel reaches
// the connection DirectTCPIP returns for the requested address, a
// half-close passes through in both directions, a refusal carries its
// reason, a host without DirectTCPIP refuses such channels, and Close ends
// forwarded connections.
func TestDirectTCPIP(t *testing.T) {
	host, user := newSigner(t), newSigner(t)
	// The target answers with what it read, once the client half-closed.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var targetWG sync.WaitGroup
	t.Cleanup(func() { _ = target.Close(); targetWG.Wait() })
	targetWG.Go(func() {
		for {
			nc, err := target.Accept()
			if err != nil {
				return
			}
			targetWG.Go(func() {
				defer func() { _ = nc.Close() }()
				b, _ := io.ReadAll(nc)
				_, _ = nc.Write(append([]byte("got:"), b...))
			})
		}
	})
	var mu sync.Mutex
	var asked []string
	loopbackOnly := func(addr string) (net.Conn, error) {
		mu.Lock()
		asked = append(asked, addr)
		mu.Unlock()
		h, _, err := net.SplitHostPort(addr)
		if ip, perr := netip.ParseAddr(h); err != nil || perr != nil || !ip.IsLoopback() {
			return nil, &ssh.OpenChannelError{Reason: ssh.Prohibited, Message: "loopback only"}
		}
		return net.Dial("tcp", addr)
	}
	login := func(t *testing.T, addr string) *ssh.Client {
		t.Helper()
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User: "probe", Auth: []ssh.AuthMethod{ssh.PublicKeys(user)},
			HostKeyCallback: ssh.FixedHostKey(host.PublicKey()), Timeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	rejection := func(t *testing.T, err error) ssh.RejectionReason {
		t.Helper()
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) {
			t.Fatalf("dial: %v, want an *ssh.OpenChannelError", err)
		}
		return oce.Reason
	}
	jump, stop := startJump(t, host, user, loopbackOnly)

	t.Run("round trip with half-closes", func(t *testing.T) {
		nc, err := login(t, jump).Dial("tcp", target.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nc.Close() }()
		if _, err := nc.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if err := nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(nc)
		if err != nil || string(got) != "got:ping" {
			t.Fatalf("read %q, %v; want %q and the target's end of stream", got, err, "got:ping")
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(asked, target.Addr().String()) {
			t.Errorf("DirectTCPIP was asked for %q, want %q among them", asked, target.Addr())
		}
	})
	t.Run("refusal keeps its reason", func(t *testing.T) {
		// A name, not an address: the refusal happens before any dial.
		_, err := login(t, jump).Dial("tcp", "fleet.invalid:22")
		if got := rejection(t, err); got != ssh.Prohibited {
			t.Errorf("reason %v, want %v", got, ssh.Prohibited)
		}
	})
	t.Run("dial error is connection failed", func(t *testing.T) {
		closed := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")))
		_, err := login(t, jump).Dial("tcp", closed)
		if got := rejection(t, err); got != ssh.ConnectionFailed {
			t.Errorf("reason %v, want %v", got, ssh.ConnectionFailed)
		}
	})
	t.Run("host without DirectTCPIP", func(t *testing.T) {
		plain, _ := startJump(t, host, user, nil)
		_, err := login(t, plain).Dial("tcp", target.Addr().String())
		if got := rejection(t, err); got != ssh.UnknownChannelType {
			t.Errorf("reason %v, want %v", got, ssh.UnknownChannelType)
		}
	})
	t.Run("close ends forwarded connections", func(t *testing.T) {
		// The target waits for an end of stream the client never sends.
		nc, err := login(t, jump).Dial("tcp", target.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nc.Close() }()
		if _, err := nc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("Close still waiting for a forwarded connection after 10s")
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(nc); err != nil || string(got) != "" {
			t.Errorf("after Close the channel read %q, %v; want its end without data", got, err)
		}
	})
}
