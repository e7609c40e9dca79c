package sshserver

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultHandshakeTimeout bounds a connection from accept to the end of
// authentication when Host.HandshakeTimeout is zero, so that a stalled
// client cannot pin a connection forever (sshd's LoginGraceTime).
const DefaultHandshakeTimeout = 10 * time.Second

// acceptBackoff is how long an accept loop pauses after an error other than
// a closed listener, typically EMFILE, instead of spinning.
const acceptBackoff = 50 * time.Millisecond

// Host says how the connections of one listener are served.
type Host struct {
	// Name identifies the host in logs.
	Name string
	// Config returns the SSH server configuration; it is called for every
	// connection, after PreHandshake, and may build the configuration
	// lazily. An error ends the connection and is logged.
	Config func() (*ssh.ServerConfig, error)
	// PreHandshake, when set, gets the raw connection first; returning
	// false ends it without a handshake. It must return once the
	// connection is closed (Server.Close closes it).
	PreHandshake func(nc net.Conn) bool
	// HandshakeTimeout bounds banner exchange and authentication; zero
	// means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxSessions, when positive, is how many session channels one
	// connection may open; later ones are rejected.
	MaxSessions int
	// Exec decides on an exec request: it returns the function that runs
	// the command, or nil to refuse the request. Nil refuses every request.
	Exec func(command string) func(*Session)
	// Channel, when set, serves every accepted session channel in place
	// of the exec-only handler (Exec is then unused): for hosts that need
	// pty-req, shell or other requests. It returns once the channel is
	// done; the channel is closed after it returns.
	Channel func(nc net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request)
	// DirectTCPIP, when set, makes the host a jump host: a direct-tcpip
	// channel (what ssh -J and ProxyJump open) is spliced to the
	// connection DirectTCPIP returns for the requested "host:port". An
	// error rejects the channel: with the reason of an
	// *ssh.OpenChannelError, with ssh.ConnectionFailed otherwise. Nil
	// rejects every direct-tcpip channel.
	DirectTCPIP func(addr string) (net.Conn, error)
}

// Server serves SSH on any number of listeners. The zero value is not
// usable; call New.
type Server struct {
	log *slog.Logger

	// accepted counts TCP connections, sessions accepted session channels.
	accepted atomic.Int64
	sessions atomic.Int64

	// mu guards listeners, conns and closed.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	// done is closed by Close; accept loops back off on it.
	done chan struct{}

	wg sync.WaitGroup
}

// New returns a server that logs to logger (nil discards). It serves
// nothing until Serve is called.
func New(logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:       logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
}

// ErrServerClosed is returned by Serve when Close has been called.
var ErrServerClosed = errors.New("sshserver: server closed")

// Serve accepts connections on ln and serves them as h says, until Close; it
// then returns ErrServerClosed. Connection handlers run on goroutines that
// Close waits for. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener, h *Host) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		_ = ln.Close()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.log.Warn("accept failed", "host", h.Name, "err", err)
			select {
			case <-s.done:
			case <-time.After(acceptBackoff):
			}
			continue
		}
		s.accepted.Add(1)
		if !s.track(nc) {
			_ = nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(nc)
			s.handle(h, nc)
		}()
	}
}

// isClosed reports whether Close has been called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers nc so that Close and CloseConns reach it, and counts its
// handler in wg under the same lock, so Close never waits while a handler
// is still being added. It returns false once the server is closing.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
	_ = nc.Close()
}

// Accepted returns how many TCP connections the server accepted.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Sessions returns how many session channels the server accepted.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// CloseConns cuts every live connection; listeners stay open.
func (s *Server) CloseConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		_ = nc.Close()
	}
}

// Close stops the server: it closes every listener and connection, and
// waits for every connection handler. Serve calls return ErrServerClosed.
// Later calls do nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for ln := range s.listeners {
		_ = ln.Close()
	}
	for nc := range s.conns {
		_ = nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// handle serves one connection to its end.
func (s *Server) handle(h *Host, nc net.Conn) {
	if h.PreHandshake != nil && !h.PreHandshake(nc) {
		return
	}
	cfg, err := h.Config()
	if err != nil {
		s.log.Error("cannot build server config", "host", h.Name, "err", err)
		return
	}
	timeout := h.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	conn, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		s.log.Debug("handshake failed", "host", h.Name, "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	defer func() { _ = conn.Close() }()
	_ = nc.SetDeadline(time.Time{})

	var wg sync.WaitGroup
	wg.Go(func() { ssh.DiscardRequests(reqs) })
	// gone is closed once the connection has ended, so that forwarded
	// connections do not outlive it.
	gone := make(chan struct{})
	defer wg.Wait()
	defer close(gone)
	opened := 0
	for newCh := range chans {
		if newCh.ChannelType() == "direct-tcpip" && h.DirectTCPIP != nil {
			wg.Go(func() { forward(h.DirectTCPIP, newCh, gone) })
			continue
		}
		if newCh.ChannelType() != "session" {
			_ = newCh.Reject(ssh.UnknownChannelType, "only session channels are supported")
			continue
		}
		if h.MaxSessions > 0 && opened >= h.MaxSessions {
			_ = newCh.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		opened++
		ch, chReqs, err := newCh.Accept()
		if err != nil {
			continue
		}
		s.sessions.Add(1)
		if h.Channel != nil {
			wg.Go(func() {
				h.Channel(nc, ch, chReqs)
				_ = ch.Close()
			})
			continue
		}
		wg.Go(func() { session(h, nc, ch, chReqs) })
	}
}

// forward serves one direct-tcpip channel: it dials the requested address
// and copies both ways, passing each side's end of stream on as a
// half-close, until both directions are done or the SSH connection is gone.
func forward(dial func(addr string) (net.Conn, error), newCh ssh.NewChannel, gone <-chan struct{}) {
	var req struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(newCh.ExtraData(), &req); err != nil {
		_ = newCh.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	tc, err := dial(net.JoinHostPort(req.Host, strconv.FormatUint(uint64(req.Port), 10)))
	if err != nil {
		reason, msg := ssh.ConnectionFailed, err.Error()
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			reason, msg = oce.Reason, oce.Message
		}
		_ = newCh.Reject(reason, msg)
		return
	}
	ch, reqs, err := newCh.Accept()
	if err != nil {
		_ = tc.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// reqs ends when the channel is closed, by either side or with
		// the connection: the target has nobody to talk to any more.
		ssh.DiscardRequests(reqs)
		_ = tc.Close()
	})
	done := make(chan struct{})
	wg.Go(func() {
		select {
		case <-gone:
			_ = tc.Close()
		case <-done:
		}
	})
	var copies sync.WaitGroup
	copies.Go(func() {
		_, _ = io.Copy(tc, ch)
		if cw, ok := tc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	})
	copies.Go(func() {
		_, _ = io.Copy(ch, tc)
		_ = ch.CloseWrite()
	})
	copies.Wait()
	close(done)
	_ = ch.Close()
	_ = tc.Close()
	wg.Wait()
}

// session serves one session channel: the first exec request Host.Exec
// accepts runs; every other request (pty-req, env, shell, subsystem, a
// second exec) is refused.
func session(h *Host, nc net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	// closed is closed once the client has closed the channel or the
	// connection is gone: x/crypto closes reqs then.
	closed := make(chan struct{})
	var wg sync.WaitGroup
	started := false
	for req := range reqs {
		var run func(*Session)
		var payload struct{ Command string }
		if req.Type == "exec" && !started && h.Exec != nil && ssh.Unmarshal(req.Payload, &payload) == nil {
			run = h.Exec(payload.Command)
		}
		if run == nil {
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
			continue
		}
		started = true
		_ = req.Reply(true, nil)
		sess := &Session{Command: payload.Command, Channel: ch, conn: nc, closed: closed}
		wg.Go(func() { run(sess) })
	}
	close(closed)
	wg.Wait()
	// A command that returned without ending the session, or none at all.
	_ = ch.Close()
}

// Session is one running exec request.
type Session struct {
	// Command is the command line the client asked for.
	Command string
	// Channel is the session channel: Write goes to the client's stdout,
	// Stderr() to its stderr.
	ssh.Channel

	conn   net.Conn
	closed <-chan struct{}
}

// Closed is closed once the client closed the session or the connection
// ended; a command that waits must also watch it.
func (s *Session) Closed() <-chan struct{} { return s.closed }

// Exit reports exit status status and closes the session.
func (s *Session) Exit(status uint32) {
	_, _ = s.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = s.CloseWrite()
	_ = s.Close()
}

// ExitSignal reports that the command died by signal (e.g. "KILL", without
// "SIG") and closes the session.
func (s *Session) ExitSignal(signal string) {
	_, _ = s.SendRequest("exit-signal", false, ssh.Marshal(struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}{Signal: signal}))
	_ = s.Close()
}

// Drop cuts the whole TCP connection the session runs on.
func (s *Session) Drop() { _ = s.conn.Close() }

// Wait blocks for d and reports whether it elapsed; it returns false early
// once the session is closed.
func (s *Session) Wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closed:
		return false
	}
}

// Discard reads and drops everything from r until it ends; tarpits use it on
// a raw connection.
func Discard(r io.Reader) { _, _ = io.Copy(io.Discard, r) }
