package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// client dials simulated hosts the way fleet_exporter does.
type client struct {
	port     int
	signer   ssh.Signer
	hostKeys ssh.HostKeyCallback
}

// dial connects and authenticates, giving the whole handshake timeout.
func (c *client) dial(addr netip.Addr, timeout time.Duration) (*ssh.Client, error) {
	return c.dialWith(addr, timeout, c.signer, c.hostKeys)
}

func (c *client) dialWith(addr netip.Addr, timeout time.Duration, signer ssh.Signer, hostKeys ssh.HostKeyCallback) (*ssh.Client, error) {
	target := hostPort(addr, c.port)
	conn, err := net.DialTimeout("tcp", target, timeout)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	cc, chans, reqs, err := ssh.NewClientConn(conn, target, &ssh.ClientConfig{
		User:            "fleet",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeys,
	})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// output runs cmd in a new connection and returns its stdout.
func (c *client) output(t *testing.T, addr netip.Addr, cmd string) (string, error) {
	t.Helper()
	cl, err := c.dial(addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatalf("session on %s: %v", addr, err)
	}
	defer sess.Close()
	out, err := sess.Output(cmd)
	return string(out), err
}

// seedWith sets fo.Seed to the first of a fixed list of seeds whose fleet
// satisfies ok, and returns that fleet.
func seedWith(t *testing.T, fo *fleetOptions, ok func([]simHost) bool) []simHost {
	t.Helper()
	for i := range 1000 {
		fo.Seed = "test-" + strconv.Itoa(i)
		fleet, err := buildFleet(fo)
		if err != nil {
			t.Fatal(err)
		}
		if ok(fleet) {
			return fleet
		}
	}
	t.Fatal("no seed gives the wanted fleet")
	return nil
}

// pickHosts returns the fleet's hosts with the given class and drift.
func pickHosts(t *testing.T, fleet []simHost, class hostClass, drift bool) []simHost {
	t.Helper()
	var out []simHost
	for _, h := range fleet {
		if h.Class == class && h.Drift == drift {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		t.Fatalf("fleet has no %s host with drift=%v", class, drift)
	}
	return out
}

func TestServe(t *testing.T) {
	fo := testFleet(20)
	for _, c := range faultClasses() {
		fo.Fractions[c] = 0.1
	}
	fo.Drift = 0.3
	// Drift is independent of the class, so pick a seed under which the
	// random test addresses give two plain and one drifted healthy host.
	fleet := seedWith(t, &fo, func(fleet []simHost) bool {
		n := map[bool]int{}
		for _, h := range fleet {
			if h.Class == classHealthy {
				n[h.Drift]++
			}
		}
		return n[false] >= 2 && n[true] >= 1
	})
	dir := genDir(t, fo)
	signer, pub, hostKeys := clientFiles(t, dir)
	cl := &client{port: fo.Port, signer: signer, hostKeys: hostKeys}

	healthy := pickHosts(t, fleet, classHealthy, false)
	if len(healthy) < 2 {
		t.Fatalf("need two healthy hosts, have %d", len(healthy))
	}
	h1, h2 := healthy[0].Addr, healthy[1].Addr
	drifted := pickHosts(t, fleet, classHealthy, true)[0].Addr
	var slow simHost
	var refused, tarpit, authReject, hang netip.Addr
	for _, h := range fleet {
		switch h.Class {
		case classSlow:
			slow = h
		case classRefused:
			refused = h.Addr
		case classTarpit:
			tarpit = h.Addr
		case classAuthReject:
			authReject = h.Addr
		case classHang:
			hang = h.Addr
		}
	}
	want := "ok\n" + cmdDigest(fo.Seed, false, "check") + "\n"
	wantDrift := "ok\n" + cmdDigest(fo.Seed, true, "check") + "\n"

	const slowDelay = 200 * time.Millisecond
	const patience = 300 * time.Millisecond
	stop := startServe(t, &serveOptions{Fleet: fo, AuthorizedKey: pub, SlowDelay: slowDelay})

	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"healthy host output is deterministic", func(t *testing.T) {
			for i := range 2 {
				got, err := cl.output(t, h1, "check")
				if err != nil || got != want {
					t.Errorf("run %d: output = %q, %v; want %q, nil", i, got, err, want)
				}
			}
		}},
		{"healthy hosts agree", func(t *testing.T) {
			got, err := cl.output(t, h2, "check")
			if err != nil || got != want {
				t.Errorf("output = %q, %v; want %q, nil", got, err, want)
			}
		}},
		{"hostname is per host", func(t *testing.T) {
			got, err := cl.output(t, h2, "hostname")
			if err != nil || got != h2.String()+"\n" {
				t.Errorf("output = %q, %v; want %q", got, err, h2.String()+"\n")
			}
		}},
		{"exit status", func(t *testing.T) {
			_, err := cl.output(t, h1, "exit 3")
			var ee *ssh.ExitError
			if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
				t.Errorf("err = %v, want exit status 3", err)
			}
		}},
		{"drifted host differs", func(t *testing.T) {
			got, err := cl.output(t, drifted, "check")
			if err != nil || got != wantDrift || got == want {
				t.Errorf("output = %q, %v; want %q (not %q)", got, err, wantDrift, want)
			}
		}},
		{"refused host refuses", func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", hostPort(refused, fo.Port), patience)
			if err == nil {
				conn.Close()
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial err = %v, want ECONNREFUSED", err)
			}
		}},
		{"tarpit host sends no banner", func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", hostPort(tarpit, fo.Port), patience)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(patience))
			n, err := conn.Read(make([]byte, 64))
			if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("read = %d bytes, %v; want 0 bytes and a deadline error (no banner, conn held)", n, err)
			}
			if c, err := cl.dial(tarpit, patience); err == nil {
				c.Close()
				t.Error("ssh handshake with a tarpit host succeeded")
			}
		}},
		{"auth-reject host rejects the authorized key", func(t *testing.T) {
			c, err := cl.dial(authReject, 5*time.Second)
			if err == nil {
				c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("err = %v, want an authentication failure", err)
			}
		}},
		{"healthy host rejects other keys", func(t *testing.T) {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			other, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			c, err := cl.dialWith(h1, 5*time.Second, other, hostKeys)
			if err == nil {
				c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("err = %v, want an authentication failure", err)
			}
		}},
		{"hang host never finishes", func(t *testing.T) {
			c, err := cl.dial(hang, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			sess, err := c.NewSession()
			if err != nil {
				c.Close()
				t.Fatal(err)
			}
			if err := sess.Start("check"); err != nil {
				c.Close()
				t.Fatal(err)
			}
			waitc := make(chan error, 1)
			go func() { waitc <- sess.Wait() }()
			select {
			case err := <-waitc:
				c.Close()
				t.Fatalf("command on hang host finished: %v", err)
			case <-time.After(patience):
			}
			c.Close()
			select {
			case <-waitc:
			case <-time.After(5 * time.Second):
				t.Error("session did not end after the client closed")
			}
		}},
		{"slow host takes slow-delay", func(t *testing.T) {
			start := time.Now()
			got, err := cl.output(t, slow.Addr, "check")
			if elapsed := time.Since(start); elapsed < slowDelay {
				t.Errorf("command took %s, want at least %s", elapsed, slowDelay)
			}
			wantSlow, _ := commandOutput(fo.Seed, &slow, "check")
			if err != nil || got != string(wantSlow) {
				t.Errorf("output = %q, %v; want %q", got, err, wantSlow)
			}
		}},
		{"host keys match known_hosts and differ per host", func(t *testing.T) {
			// Every dial above went through the known_hosts callback; here the
			// key of h1 is checked against h2's entry and must be refused.
			mismatch := func(_ string, remote net.Addr, key ssh.PublicKey) error {
				return hostKeys(hostPort(h2, fo.Port), remote, key)
			}
			c, err := cl.dialWith(h1, 5*time.Second, signer, mismatch)
			if err == nil {
				c.Close()
			}
			var ke *knownhosts.KeyError
			if !errors.As(err, &ke) || len(ke.Want) == 0 {
				t.Errorf("err = %v, want a known_hosts key mismatch", err)
			}
		}},
		{"only exec is supported", func(t *testing.T) {
			c, err := cl.dial(h1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if err := sess.Shell(); err == nil {
				t.Error("shell request accepted")
			}
			if conn, err := c.Dial("tcp", "127.0.0.1:1"); err == nil {
				conn.Close()
				t.Error("port forwarding accepted")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
	stop()

	t.Run("second run with delays gives the same output", func(t *testing.T) {
		const delay = 100 * time.Millisecond
		startServe(t, &serveOptions{
			Fleet: fo, AuthorizedKey: pub, SlowDelay: slowDelay,
			DelayBanner: delay, DelayAuth: delay, DelayCommand: delay,
		})
		start := time.Now()
		c, err := cl.dial(h1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if elapsed := time.Since(start); elapsed < 2*delay {
			t.Errorf("handshake took %s, want at least banner+auth delay %s", elapsed, 2*delay)
		}
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		start = time.Now()
		out, err := sess.Output("check")
		if elapsed := time.Since(start); elapsed < delay {
			t.Errorf("command took %s, want at least the command delay %s", elapsed, delay)
		}
		if err != nil || string(out) != want {
			t.Errorf("output = %q, %v; want %q as in the first run", out, err, want)
		}
	})
}

func TestServeShutdownClosesConnections(t *testing.T) {
	fo := testFleet(2)
	fo.Fractions[classTarpit] = 0.5
	fo.Fractions[classHang] = 0.5
	dir := genDir(t, fo)
	signer, pub, hostKeys := clientFiles(t, dir)
	fleet, err := buildFleet(&fo)
	if err != nil {
		t.Fatal(err)
	}
	tarpit, hang := fleet[0].Addr, fleet[1].Addr
	if fleet[0].Class != classTarpit {
		tarpit, hang = hang, tarpit
	}
	stop := startServe(t, &serveOptions{Fleet: fo, AuthorizedKey: pub})
	cl := &client{port: fo.Port, signer: signer, hostKeys: hostKeys}

	tconn, err := net.Dial("tcp", hostPort(tarpit, fo.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer tconn.Close()
	c, err := cl.dial(hang, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("check"); err != nil {
		t.Fatal(err)
	}
	// Make sure the tarpit connection has been accepted and is being held.
	_ = tconn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := tconn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("tarpit read before shutdown: %v", err)
	}

	stop() // fails the test if serve does not return promptly

	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"tarpit connection closed", func(t *testing.T) {
			_ = tconn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := tconn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read after shutdown: %v, want EOF", err)
			}
		}},
		{"hanging session ended", func(t *testing.T) {
			waitc := make(chan error, 1)
			go func() { waitc <- sess.Wait() }()
			select {
			case err := <-waitc:
				if err == nil {
					t.Error("hanging command reported success")
				}
			case <-time.After(5 * time.Second):
				c.Close()
				<-waitc
				t.Error("session still open after shutdown")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestServeErrors(t *testing.T) {
	fo := testFleet(3)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    serveOptions
		setup   func(t *testing.T)
		wantErr string
	}{
		{name: "no key", opts: serveOptions{Fleet: fo}, wantErr: "no authorized key"},
		{name: "negative delay", opts: serveOptions{Fleet: fo, AuthorizedKey: key, DelayAuth: -time.Second}, wantErr: "--delay.auth"},
		{name: "bad shard", opts: serveOptions{Fleet: fo, AuthorizedKey: key, Shard: 2, Shards: 2}, wantErr: "shard 2 of 2"},
		{
			name: "address in use",
			opts: serveOptions{Fleet: fo, AuthorizedKey: key},
			setup: func(t *testing.T) {
				// Occupy the last host so that the first listeners succeed and
				// must be closed again.
				addrs, err := hostAddrs(fo.Base, fo.N)
				if err != nil {
					t.Fatal(err)
				}
				ln, err := net.Listen("tcp", hostPort(addrs[len(addrs)-1], fo.Port))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
			},
			wantErr: "listen for host",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			tc.opts.Ready = io.Discard
			tc.opts.Logger = testLogger(t)
			// serve must fail before it waits for ctx; should it start
			// serving instead, it returns nil after the timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := serve(ctx, &tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
			if tc.name == "address in use" {
				// The listeners opened before the failure were closed.
				addrs, _ := hostAddrs(fo.Base, fo.N)
				ln, err := net.Listen("tcp", hostPort(addrs[0], fo.Port))
				if err != nil {
					t.Fatalf("first host's address still in use: %v", err)
				}
				ln.Close()
			}
		})
	}
}
