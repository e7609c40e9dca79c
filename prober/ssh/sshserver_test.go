package ssh

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
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testUser is the only user the test server knows.
const testUser = "probe"

// testServerConfig configures an testServer.
type testServerConfig struct {
	// hostSigners are the server's host keys (or host certificates).
	hostSigners []ssh.Signer
	// authorized are the public keys accepted for testUser.
	authorized []ssh.PublicKey
	// password, when set, is accepted for testUser.
	password string
	// userCA, when set, signs accepted user certificates.
	userCA ssh.PublicKey
	// maxSessions, when positive, is how many session channels one
	// connection may open; later ones are rejected.
	maxSessions int
}

// testServer is an in-process SSH server on 127.0.0.1:0 for the prober
// tests. It never runs a shell: exec requests are looked up in a fixed table
// (see run). Every goroutine it starts is tracked, so close leaves none.
type testServer struct {
	t           testing.TB
	ln          net.Listener
	cfg         *ssh.ServerConfig
	port        int
	maxSessions int

	// accepted counts TCP connections, authAttempts every userauth request
	// ("none" included), sessions every session channel opened.
	accepted     atomic.Int64
	authAttempts atomic.Int64
	sessions     atomic.Int64

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// startTestServer starts a server; it is closed on test cleanup.
func startTestServer(t testing.TB, sc testServerConfig) *testServer {
	t.Helper()
	s := &testServer{t: t, conns: make(map[net.Conn]struct{}), maxSessions: sc.maxSessions}
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			return sc.userCA != nil && bytes.Equal(auth.Marshal(), sc.userCA.Marshal())
		},
	}
	s.cfg = &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() != testUser {
				return nil, errors.New("unknown user")
			}
			if _, ok := key.(*ssh.Certificate); ok {
				return checker.Authenticate(meta, key)
			}
			for _, k := range sc.authorized {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
		AuthLogCallback: func(ssh.ConnMetadata, string, error) {
			s.authAttempts.Add(1)
		},
	}
	if sc.password != "" {
		s.cfg.PasswordCallback = func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if meta.User() == testUser && string(pw) == sc.password {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("wrong password")
		}
	}
	for _, hs := range sc.hostSigners {
		s.cfg.AddHostKey(hs)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s.ln = ln
	s.port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

// serve accepts connections until the listener is closed.
func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		if !s.track(nc) {
			_ = nc.Close()
			return
		}
		s.wg.Add(1)
		go s.handle(nc)
	}
}

// track registers a live connection; false once the server is closing.
func (s *testServer) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	return true
}

// handle serves one connection.
func (s *testServer) handle(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		_ = nc.Close()
	}()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.cfg)
	if err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	opened := 0
	for newCh := range chans {
		if newCh.ChannelType() != "session" {
			_ = newCh.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		if s.maxSessions > 0 && opened >= s.maxSessions {
			_ = newCh.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		opened++
		ch, chReqs, err := newCh.Accept()
		if err != nil {
			continue
		}
		s.sessions.Add(1)
		s.wg.Add(1)
		go s.session(nc, ch, chReqs)
	}
	_ = conn.Close()
}

// session serves one session channel: exactly one exec request runs.
func (s *testServer) session(nc net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer s.wg.Done()
	done := make(chan struct{})
	started := false
	for req := range reqs {
		if req.Type != "exec" || started {
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil || payload.Command == "reject" {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		started = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(nc, ch, payload.Command, done)
		}()
	}
	close(done)
	if !started {
		_ = ch.Close()
	}
}

// run executes one command of the table:
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
func (s *testServer) run(nc net.Conn, ch ssh.Channel, cmd string, done <-chan struct{}) {
	verb, arg, _ := strings.Cut(cmd, " ")
	status := uint32(0)
	switch verb {
	case "echo":
		_, _ = ch.Write([]byte(arg + "\n"))
	case "printf":
		_, _ = ch.Write([]byte(arg))
	case "exit":
		n, _ := strconv.Atoi(arg)
		status = uint32(n)
	case "flood", "errflood":
		n, _ := strconv.ParseInt(arg, 10, 64)
		var w io.Writer = ch
		if verb == "errflood" {
			w = ch.Stderr()
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
		<-done
		return
	case "signal":
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(&struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: "KILL"}))
		_ = ch.Close()
		return
	case "noexit":
		_ = ch.Close()
		return
	case "drop":
		_ = nc.Close()
		return
	default:
		_, _ = fmt.Fprintf(ch.Stderr(), "unknown command %q\n", cmd)
		status = 127
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(&struct{ Status uint32 }{status}))
	_ = ch.Close()
}

// killConns cuts every live server-side connection.
func (s *testServer) killConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		_ = nc.Close()
	}
}

// close stops the server and waits for all its goroutines.
func (s *testServer) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.ln.Close()
	s.killConns()
	s.wg.Wait()
}

// rawListener is a TCP listener on 127.0.0.1:0 whose connections get
// the given treatment instead of SSH: a tarpit (nothing written), garbage,
// or a valid banner followed by silence.
type rawListener struct {
	ln       net.Listener
	port     int
	accepted atomic.Int64
	// received counts bytes read from clients: a client that sent its
	// version line is past connect and waiting for ours.
	received atomic.Int64

	// mu guards conns.
	mu    sync.Mutex
	conns []net.Conn

	wg sync.WaitGroup
}

// startRawListener starts a listener that writes greeting to every
// connection and then keeps it open, reading and discarding, until the test
// ends; closeAfter closes it right after the greeting instead.
func startRawListener(t testing.TB, greeting string, closeAfter bool) *rawListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	l := &rawListener{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			l.mu.Lock()
			l.conns = append(l.conns, nc)
			l.mu.Unlock()
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				if greeting != "" {
					_, _ = nc.Write([]byte(greeting))
				}
				if closeAfter {
					_ = nc.Close()
					return
				}
				var buf [512]byte
				for {
					n, err := nc.Read(buf[:])
					l.received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		l.mu.Lock()
		for _, nc := range l.conns {
			_ = nc.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return l
}
