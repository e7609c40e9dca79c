package sshserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
)

// DefaultUser is the only user a TestServer knows unless TestOptions.User
// names another.
const DefaultUser = "probe"

// TestOptions configure StartTest.
type TestOptions struct {
	// Addr is the loopback IP address to listen on; empty means 127.0.0.1.
	// The port is always a free one.
	Addr string
	// HostSigners are the server's host keys (or host certificates); at
	// least one is required.
	HostSigners []ssh.Signer
	// User is the only user that can log in; empty means DefaultUser.
	User string
	// AuthorizedKeys are the public keys accepted for User.
	AuthorizedKeys []ssh.PublicKey
	// UserCA, when set, is trusted to sign user certificates for User.
	UserCA ssh.PublicKey
	// Password, when set, is accepted for User by the "password" method.
	Password string
	// KeyboardInteractive also accepts Password by keyboard-interactive, as
	// servers do that turn "password" off: one "Password: " prompt.
	KeyboardInteractive bool
	// MaxSessions, when positive, is how many session channels one
	// connection may open; later ones are rejected.
	MaxSessions int
	// Exec serves exec requests; nil means Builtin.
	Exec func(command string) func(*Session)
}

// TestServer is a running single-user server from StartTest. With no
// authorized key, CA or password it rejects every login, recording what it
// was offered.
type TestServer struct {
	*Server
	// Addr is the listen address and Port the listen port.
	Addr string
	Port int

	// authAttempts counts every userauth request, "none" included.
	authAttempts atomic.Int64

	// mu guards passwords and keys.
	mu        sync.Mutex
	passwords []string
	keys      int

	serveDone chan struct{}
}

// StartTest listens on a free port of opts.Addr and serves until Close.
func StartTest(opts TestOptions) (*TestServer, error) {
	if len(opts.HostSigners) == 0 {
		return nil, errors.New("sshserver: no host key")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.Addr); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("sshserver: %q is not a loopback IP address", opts.Addr)
	}
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.Exec == nil {
		opts.Exec = Builtin
	}
	ts := &TestServer{Server: New(nil), serveDone: make(chan struct{})}
	cfg := ts.config(&opts)
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.Addr, "0"))
	if err != nil {
		return nil, fmt.Errorf("sshserver: listen: %w", err)
	}
	ts.Addr, ts.Port = opts.Addr, ln.Addr().(*net.TCPAddr).Port
	h := &Host{
		Name:        ln.Addr().String(),
		Config:      func() (*ssh.ServerConfig, error) { return cfg, nil },
		MaxSessions: opts.MaxSessions,
		Exec:        opts.Exec,
	}
	go func() {
		defer close(ts.serveDone)
		_ = ts.Serve(ln, h)
	}()
	return ts, nil
}

// config builds the authentication of opts.
func (ts *TestServer) config(opts *TestOptions) *ssh.ServerConfig {
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			return opts.UserCA != nil && bytes.Equal(auth.Marshal(), opts.UserCA.Marshal())
		},
	}
	passwordOK := func(meta ssh.ConnMetadata, pw string) (*ssh.Permissions, error) {
		ts.mu.Lock()
		ts.passwords = append(ts.passwords, pw)
		ts.mu.Unlock()
		if opts.Password != "" && meta.User() == opts.User && pw == opts.Password {
			return &ssh.Permissions{}, nil
		}
		return nil, errors.New("password rejected")
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			ts.mu.Lock()
			ts.keys++
			ts.mu.Unlock()
			if meta.User() != opts.User {
				return nil, errors.New("unknown user")
			}
			if _, ok := key.(*ssh.Certificate); ok {
				return checker.Authenticate(meta, key)
			}
			for _, k := range opts.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
		PasswordCallback: func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			return passwordOK(meta, string(pw))
		},
		AuthLogCallback: func(ssh.ConnMetadata, string, error) {
			ts.authAttempts.Add(1)
		},
	}
	if opts.KeyboardInteractive {
		cfg.KeyboardInteractiveCallback = func(meta ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			answers, err := client("", "", []string{"Password: "}, []bool{false})
			if err != nil {
				return nil, err
			}
			if len(answers) != 1 {
				return nil, errors.New("want one answer")
			}
			return passwordOK(meta, answers[0])
		}
	}
	for _, hs := range opts.HostSigners {
		cfg.AddHostKey(hs)
	}
	return cfg
}

// HostPort returns "addr:port" for dialling the server.
func (ts *TestServer) HostPort() string {
	return net.JoinHostPort(ts.Addr, strconv.Itoa(ts.Port))
}

// AuthAttempts returns how many userauth requests the server answered,
// "none" included.
func (ts *TestServer) AuthAttempts() int64 { return ts.authAttempts.Load() }

// Offered returns the passwords offered so far (by either method) and how
// many public keys were tried.
func (ts *TestServer) Offered() (passwords []string, keys int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.passwords...), ts.keys
}

// Close stops the server and waits for all its goroutines.
func (ts *TestServer) Close() error {
	err := ts.Server.Close()
	<-ts.serveDone
	return err
}

// Builtin is the command table of test servers. It never runs a shell:
//
//	echo TEXT      writes TEXT and a newline, exits 0
//	printf TEXT    writes TEXT, exits 0
//	exit N         exits with status N
//	flood N        writes N bytes to stdout, exits 0
//	errflood N     writes N bytes to stderr, exits 0
//	sleep forever  waits until the session is closed
//	signal         dies by SIGKILL
//	noexit         closes the session without an exit status
//	drop           cuts the whole TCP connection
//	reject         the exec request itself is refused
//
// Anything else writes an error to stderr and exits 127.
func Builtin(command string) func(*Session) {
	if command == "reject" {
		return nil
	}
	return runBuiltin
}

// runBuiltin runs one command of the Builtin table.
func runBuiltin(s *Session) {
	verb, arg, _ := strings.Cut(s.Command, " ")
	status := uint32(0)
	switch verb {
	case "echo":
		_, _ = s.Write([]byte(arg + "\n"))
	case "printf":
		_, _ = s.Write([]byte(arg))
	case "exit":
		n, _ := strconv.ParseUint(arg, 10, 32)
		status = uint32(n)
	case "flood", "errflood":
		n, _ := strconv.ParseInt(arg, 10, 64)
		var w io.Writer = s
		if verb == "errflood" {
			w = s.Stderr()
		}
		buf := bytes.Repeat([]byte("x"), 32<<10)
		for n > 0 {
			k, err := w.Write(buf[:min(n, int64(len(buf)))])
			n -= int64(k)
			if err != nil {
				break
			}
		}
	case "sleep":
		<-s.Closed()
		return
	case "signal":
		s.ExitSignal("KILL")
		return
	case "noexit":
		_ = s.Close()
		return
	case "drop":
		s.Drop()
		return
	default:
		_, _ = fmt.Fprintf(s.Stderr(), "unknown command %q\n", s.Command)
		status = 127
	}
	s.Exit(status)
}
