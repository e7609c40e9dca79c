package sshdtest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

// dialRun logs in to s with cfg, runs cmd and returns its stdout.
func dialRun(t *testing.T, s *Server, cfg *ssh.ClientConfig, cmd string) (string, error) {
	t.Helper()
	cfg.Timeout = 10 * time.Second
	c, err := ssh.Dial("tcp", s.HostPort(), cfg)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer func() { _ = sess.Close() }()
	var out bytes.Buffer
	sess.Stdout = &out
	err = sess.Run(cmd)
	return out.String(), err
}

// signer loads a private key, decrypting it with its passphrase.
func signer(t *testing.T, k Key) ssh.Signer {
	t.Helper()
	pem, err := os.ReadFile(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	var sg ssh.Signer
	if k.Passphrase != "" {
		sg, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(k.Passphrase))
	} else {
		sg, err = ssh.ParsePrivateKey(pem)
	}
	if err != nil {
		t.Fatalf("parse %s: %v", k.Private, err)
	}
	return sg
}

// hostKeyCallback parses a known_hosts file.
func hostKeyCallback(t *testing.T, path string) ssh.HostKeyCallback {
	t.Helper()
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatalf("knownhosts %s: %v", path, err)
	}
	return cb
}

func TestPublicKeyLogin(t *testing.T) {
	s := Start(t, Options{})
	kh := hostKeyCallback(t, s.KnownHosts(t, "known_hosts", KnownHostsPlain))
	tests := []struct {
		name, keyType, passphrase string
	}{
		{"ed25519", KeyEd25519, ""},
		{"ecdsa", KeyECDSA, ""},
		{"rsa", KeyRSA, ""},
		{"ed25519 encrypted", KeyEd25519, "sesame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := s.ClientKey(t, strings.ReplaceAll("id_"+tt.name, " ", "_"), tt.keyType, tt.passphrase)
			cfg := &ssh.ClientConfig{User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer(t, k))}, HostKeyCallback: kh}
			// Not yet authorized: the login must fail.
			if _, err := dialRun(t, s, cfg, "true"); err == nil {
				t.Fatal("login with an unauthorized key succeeded")
			}
			s.Authorize(t, k)
			out, err := dialRun(t, s, cfg, "echo hello")
			if err != nil {
				t.Fatalf("login: %v\nlog:\n%s", err, s.Log(t))
			}
			if out != "hello\n" {
				t.Errorf("stdout = %q, want %q", out, "hello\n")
			}
		})
	}
	if !strings.Contains(s.Log(t), "Accepted publickey for "+s.User) {
		t.Errorf("sshd log lacks the accepted logins:\n%s", s.Log(t))
	}
	// One login per case succeeded; the refused ones are not counted.
	s.WaitLog(t, 10*time.Second, func(string) bool { return s.PublicKeyLogins(t) >= len(tests) })
	if got := s.PublicKeyLogins(t); got != len(tests) {
		t.Errorf("PublicKeyLogins = %d, want %d:\n%s", got, len(tests), s.Log(t))
	}
}

func TestKnownHostsForms(t *testing.T) {
	s := Start(t, Options{Addr: "127.0.0.5", HostCertificate: true})
	if s.HostPort() != net.JoinHostPort("127.0.0.5", itoa(s.Port)) {
		t.Fatalf("HostPort = %q", s.HostPort())
	}
	k := s.ClientKey(t, "id", KeyEd25519, "")
	s.Authorize(t, k)
	other := GenerateKey(t, t.TempDir(), "other", KeyEd25519, "")
	// The server offers certificates too; a client that has no CA line
	// must ask for plain keys, and one with a CA line for certificates.
	certAlgos := []string{ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01, ssh.CertAlgoRSASHA256v01}
	plainAlgos := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA256}
	tests := []struct {
		name    string
		form    KnownHostsForm
		keys    []Key
		algos   []string
		wantErr bool
	}{
		{name: "plain", form: KnownHostsPlain, algos: plainAlgos},
		{name: "hashed", form: KnownHostsHashed, algos: plainAlgos},
		{name: "cert authority", form: KnownHostsCertAuthority, algos: certAlgos},
		{name: "plain other key", form: KnownHostsPlain, keys: []Key{other}, algos: []string{ssh.KeyAlgoED25519}, wantErr: true},
		{name: "cert authority other ca", form: KnownHostsCertAuthority, keys: []Key{other}, algos: certAlgos, wantErr: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := s.KnownHosts(t, "known_hosts_"+itoa(i), tt.form, tt.keys...)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			hashed := strings.HasPrefix(string(b), "|1|")
			if hashed != (tt.form == KnownHostsHashed) {
				t.Errorf("hashed = %v for form %v:\n%s", hashed, tt.form, b)
			}
			cfg := &ssh.ClientConfig{
				User:              s.User,
				Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer(t, k))},
				HostKeyCallback:   hostKeyCallback(t, path),
				HostKeyAlgorithms: tt.algos,
			}
			_, err = dialRun(t, s, cfg, "true")
			var ke *knownhosts.KeyError
			switch {
			case tt.wantErr && err == nil:
				t.Fatal("host key accepted, want rejection")
			case tt.wantErr && !errors.As(err, &ke) && !strings.Contains(err.Error(), "no authorities for hostname"):
				t.Fatalf("err = %v, want a host key error", err)
			case !tt.wantErr && err != nil:
				t.Fatalf("login: %v\nknown_hosts:\n%s", err, b)
			}
		})
	}
}

func TestUserCertificate(t *testing.T) {
	s := Start(t, Options{UserCA: true, HostKeyTypes: []string{KeyEd25519}})
	kh := hostKeyCallback(t, s.KnownHosts(t, "known_hosts", KnownHostsPlain))
	tests := []struct {
		name       string
		principals []string
		wantErr    bool
	}{
		{name: "login user", principals: nil},
		{name: "other principal", principals: []string{"nobody-else"}, wantErr: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := s.ClientKey(t, "id_cert_"+itoa(i), KeyEd25519, "")
			certPath := s.SignUserKey(t, k, tt.principals...)
			b, err := os.ReadFile(certPath)
			if err != nil {
				t.Fatal(err)
			}
			pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
			if err != nil {
				t.Fatal(err)
			}
			cert, ok := pub.(*ssh.Certificate)
			if !ok {
				t.Fatalf("%s is not a certificate", certPath)
			}
			cs, err := ssh.NewCertSigner(cert, signer(t, k))
			if err != nil {
				t.Fatal(err)
			}
			// The plain key is not in authorized_keys: only the CA can let it in.
			cfg := &ssh.ClientConfig{User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)}, HostKeyCallback: kh}
			_, err = dialRun(t, s, cfg, "true")
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("err = %v, want error %v\nlog:\n%s", err, tt.wantErr, s.Log(t))
			}
		})
	}
}

func TestPasswordUser(t *testing.T) {
	RequireOpenSSH(t)
	name, password := PasswordUser(t)
	s := Start(t, Options{PasswordAuthentication: true, HostKeyTypes: []string{KeyEd25519}})
	kh := hostKeyCallback(t, s.KnownHosts(t, "known_hosts", KnownHostsPlain))
	tests := []struct {
		name, password string
		wantErr        bool
	}{
		{name: "right password", password: password},
		{name: "wrong password", password: password + "x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &ssh.ClientConfig{User: name, Auth: []ssh.AuthMethod{ssh.Password(tt.password)}, HostKeyCallback: kh}
			out, err := dialRun(t, s, cfg, "id -un")
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("err = %v, want error %v\nlog:\n%s", err, tt.wantErr, s.Log(t))
			}
			if !tt.wantErr && out != name+"\n" {
				t.Errorf("id -un = %q, want %q", out, name+"\n")
			}
		})
	}
}

// TestCleanupStopsServer checks what a test may rely on once a server's
// test has ended: the listener is gone, so is its listening socket, and
// nothing presenting the server's host key answers on its port. Each round
// connects right before the cleanup, so sshd has just forked a child for
// that connection when it is told to stop; the child holds a copy of the
// listening socket until it runs, which cleanup must wait out. The port is
// not checked for being refused: once released, another process may take it.
func TestCleanupStopsServer(t *testing.T) {
	for round := range 5 {
		var s *Server
		t.Run("round "+itoa(round), func(t *testing.T) {
			s = Start(t, Options{Addr: "127.0.0.83", HostKeyTypes: []string{KeyEd25519}})
			if err := syscall.Kill(s.PID(), 0); err != nil {
				t.Fatalf("sshd pid %d not running: %v", s.PID(), err)
			}
			c, err := net.DialTimeout("tcp", s.HostPort(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		})
		if s == nil {
			t.FailNow()
		}
		if err := syscall.Kill(s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("after cleanup, kill(%d, 0) = %v, want ESRCH", s.PID(), err)
		}
		listening, err := listeningInodes()
		if err != nil {
			t.Fatal(err)
		}
		if listening[s.listenInode] {
			t.Errorf("after cleanup, sshd's listening socket (inode %d) is still open", s.listenInode)
		}
		if ours, _ := s.answers(context.Background(), s.HostPort()); ours {
			t.Errorf("after cleanup, %s still serves the server's host key", s.HostPort())
		}
	}
}

// TestLaunchRejectsForeignListener starts sshd on a port another listener
// holds. sshd cannot bind it and exits; Launch must report that rather than
// take the other listener, which accepts connections too, for its sshd.
func TestLaunchRejectsForeignListener(t *testing.T) {
	RequireOpenSSH(t)
	port := testutil.TCPListener(t, "127.0.0.1")
	s, err := Launch(context.Background(), Options{Dir: t.TempDir(), Port: port, HostKeyTypes: []string{KeyEd25519}})
	if err == nil {
		_ = s.Close()
		t.Fatalf("Launch on port %d, held by another listener, succeeded", port)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("Launch error = %v, want sshd's bind failure in it", err)
	}
}

func TestStartRejectsNonLoopback(t *testing.T) {
	RequireOpenSSH(t)
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	// Fatalf ends the goroutine through runtime.Goexit, as in a real test.
	go func() {
		defer close(done)
		Start(ft, Options{Addr: "192.0.2.1"})
	}()
	<-done
	if !ft.failed {
		t.Fatal("Start accepted a non-loopback address")
	}
}

// fatalRecorder records Fatalf instead of failing the test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

func itoa(i int) string { return strconv.Itoa(i) }
