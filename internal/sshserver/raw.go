package sshserver

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// RawServer is a TCP listener on loopback whose connections go to a handler
// instead of SSH: tarpits, garbage, a banner followed by silence. It closes
// each connection once its handler returns.
type RawServer struct {
	// Addr is the listen address and Port the listen port.
	Addr string
	Port int

	ln       net.Listener
	accepted atomic.Int64
	received atomic.Int64

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// StartRaw listens on a free port of the loopback address addr (empty:
// 127.0.0.1) and serves every connection with handle, which must return once
// a read reports that the client or Close closed the connection.
func StartRaw(addr string, handle func(nc net.Conn)) (*RawServer, error) {
	if addr == "" {
		addr = "127.0.0.1"
	}
	if ip := net.ParseIP(addr); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("sshserver: %q is not a loopback IP address", addr)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, fmt.Errorf("sshserver: listen: %w", err)
	}
	r := &RawServer{Addr: addr, Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, conns: make(map[net.Conn]struct{})}
	r.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			r.accepted.Add(1)
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				_ = nc.Close()
				return
			}
			r.conns[nc] = struct{}{}
			r.mu.Unlock()
			r.wg.Go(func() {
				handle(&countingConn{Conn: nc, n: &r.received})
				r.mu.Lock()
				delete(r.conns, nc)
				r.mu.Unlock()
				_ = nc.Close()
			})
		}
	})
	return r, nil
}

// HostPort returns "addr:port" for dialling the server.
func (r *RawServer) HostPort() string {
	return net.JoinHostPort(r.Addr, strconv.Itoa(r.Port))
}

// Accepted returns how many connections the server accepted.
func (r *RawServer) Accepted() int64 { return r.accepted.Load() }

// Received returns how many bytes handlers read from clients: a client that
// sent its version line is past connect and waiting for the server's.
func (r *RawServer) Received() int64 { return r.received.Load() }

// Close closes the listener and every connection and waits for the
// handlers.
func (r *RawServer) Close() error {
	r.mu.Lock()
	r.closed = true
	err := r.ln.Close()
	for nc := range r.conns {
		_ = nc.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

// countingConn counts the bytes read from it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Greet returns a handler that writes greeting (nothing when empty: a
// tarpit) and then reads and discards until the client closes.
func Greet(greeting string) func(net.Conn) {
	return func(nc net.Conn) {
		if greeting != "" {
			_, _ = nc.Write([]byte(greeting))
		}
		Discard(nc)
	}
}

// GreetAndClose returns a handler that writes greeting and closes the
// connection at once.
func GreetAndClose(greeting string) func(net.Conn) {
	return func(nc net.Conn) { _, _ = nc.Write([]byte(greeting)) }
}
