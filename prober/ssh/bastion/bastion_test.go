package bastion

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// jumpServer is an in-process SSH jump host (internal/sshserver) that
// accepts one client key and forwards direct-tcpip channels to loopback
// addresses only.
type jumpServer struct {
	t       *testing.T
	addr    string
	hostKey sshkeys.Key
	cfg     *ssh.ServerConfig

	logins atomic.Int64

	mu     sync.Mutex
	srv    *sshserver.Server
	served chan struct{}
}

func startJump(t *testing.T, client sshkeys.Key) *jumpServer {
	t.Helper()
	s := &jumpServer{t: t, hostKey: sshkeys.Generate(t, "ed25519")}
	s.cfg = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), client.Pub.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
		AuthLogCallback: func(_ ssh.ConnMetadata, method string, err error) {
			if method == "publickey" && err == nil {
				s.logins.Add(1)
			}
		},
	}
	s.cfg.AddHostKey(s.hostKey.Signer)
	s.listen("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

// listen serves the jump host on addr; after stop, on its old address again.
func (s *jumpServer) listen(addr string) {
	s.t.Helper()
	var ln net.Listener
	var err error
	// The port of a stopped server can stay busy for a moment.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen %s: %v", addr, err)
	}
	srv, served := sshserver.New(nil), make(chan struct{})
	host := &sshserver.Host{
		Name:        "jump",
		Config:      func() (*ssh.ServerConfig, error) { return s.cfg, nil },
		DirectTCPIP: dialLoopback,
	}
	s.mu.Lock()
	s.srv, s.served, s.addr = srv, served, ln.Addr().String()
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(ln, host)
	}()
}

// dialLoopback connects a forwarded channel to addr if it is a loopback
// address and refuses it otherwise.
func dialLoopback(addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return nil, &ssh.OpenChannelError{Reason: ssh.Prohibited, Message: "loopback only"}
	}
	return net.Dial("tcp", addr)
}

// stop closes the listener and every connection, as a killed bastion does.
func (s *jumpServer) stop() {
	s.mu.Lock()
	srv, served := s.srv, s.served
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-served
}

// startEcho starts a loopback TCP server that echoes one line per
// connection and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = nc.Close() }()
				_, _ = io.Copy(nc, nc)
			}()
		}
	}()
	return ln.Addr().String()
}

func hop(s *jumpServer, client sshkeys.Key) Hop {
	return Hop{Addr: s.addr, Config: &ssh.ClientConfig{
		User:            "probe",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(client.Signer)},
		HostKeyCallback: ssh.FixedHostKey(s.hostKey.Pub),
	}}
}

func newBastion(t *testing.T, opts Options) *Bastion {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// roundTrip dials addr through b and checks that a line comes back.
func roundTrip(ctx context.Context, b *Bastion, addr string) error {
	nc, err := b.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = nc.Close() }()
	msg := []byte("hello through the bastion\n")
	if _, err := nc.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(nc, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// roundTrips runs n round trips through b to addr at once, within a
// minute, and fails the test on the first error.
func roundTrips(t *testing.T, b *Bastion, addr string, n int) {
	t.Helper()
	ctx := ctxTimeout(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- roundTrip(ctx, b, addr) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestManyTargetsFewLogins checks that many concurrent dials share the
// configured number of logins instead of one per target.
func TestManyTargetsFewLogins(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	echo := startEcho(t)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}, Connections: 2})

	roundTrips(t, b, echo, 100)
	if got := js.logins.Load(); got > 2 {
		t.Errorf("%d logins for 100 targets, want at most 2 (Connections)", got)
	}
	st := b.Stats()
	if !st.Up || st.Channels != 0 || st.Connects[ResultSuccess] != uint64(js.logins.Load()) {
		t.Errorf("Stats = %+v, want up, no channels, %d successful connects", st, js.logins.Load())
	}
}

// TestChannelLimit checks that no more channels are open at once than
// Concurrency allows, and that a dial waiting for one gives up with its
// context.
func TestChannelLimit(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	echo := startEcho(t)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}, Concurrency: 3})

	ctx := ctxTimeout(t, 30*time.Second)
	var held []net.Conn
	for range 3 {
		nc, err := b.DialContext(ctx, "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, nc)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := b.DialContext(short, "tcp", echo)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fourth dial with three held: %v, want a deadline error", err)
	}
	var he *HopError
	if errors.As(err, &he) {
		t.Errorf("waiting for a channel is not a hop failure: %v", err)
	}
	if got := b.Stats().Channels; got != 3 {
		t.Errorf("Stats().Channels = %d, want 3", got)
	}
	_ = held[0].Close()
	_ = held[0].Close() // a second close frees nothing more
	if err := roundTrip(ctx, b, echo); err != nil {
		t.Fatalf("dial after a close: %v", err)
	}
	for _, nc := range held[1:] {
		_ = nc.Close()
	}

	// Channel closes reach the server after the client has moved on, so
	// the bound is checked where it is kept: channels the client holds.
	var open, peak atomic.Int64
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := b.DialContext(ctx, "tcp", echo)
			if err != nil {
				t.Error(err)
				return
			}
			n := open.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(5 * time.Millisecond)
			open.Add(-1)
			_ = nc.Close()
		}()
	}
	wg.Wait()
	if got := peak.Load(); got > 3 {
		t.Errorf("%d channels held at once, want at most 3", got)
	}
	if got := b.Stats().Channels; got != 0 {
		t.Errorf("Stats().Channels = %d after every close, want 0", got)
	}
}

// TestRateLimit checks that channel opens are paced.
func TestRateLimit(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	echo := startEcho(t)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}, Rate: 20, Burst: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	start := time.Now()
	for range 5 {
		if err := roundTrip(ctx, b, echo); err != nil {
			t.Fatal(err)
		}
	}
	// Five opens at 20/s with a burst of one take at least four gaps.
	if got := time.Since(start); got < 4*50*time.Millisecond-10*time.Millisecond {
		t.Errorf("5 opens at 20/s took %v, want at least 190ms", got)
	}
}

// TestTwoHops checks a chain of two jump hosts, and that a failure at the
// second names that hop.
func TestTwoHops(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	first := startJump(t, client)
	second := startJump(t, client)
	echo := startEcho(t)
	ctx := ctxTimeout(t, 30*time.Second)

	b := newBastion(t, Options{Hops: []Hop{hop(first, client), hop(second, client)}, Name: "edge"})
	if err := roundTrip(ctx, b, echo); err != nil {
		t.Fatal(err)
	}
	if first.logins.Load() != 1 || second.logins.Load() != 1 {
		t.Errorf("logins: first %d, second %d, want 1 and 1", first.logins.Load(), second.logins.Load())
	}

	other := sshkeys.Generate(t, "ed25519")
	for _, tc := range []struct {
		name  string
		hops  []Hop
		stage string
		hop   string
	}{
		{"auth refused at the second hop", []Hop{hop(first, client), hop(second, other)}, StageAuth, second.addr},
		{"host key mismatch at the second hop", []Hop{hop(first, client), {Addr: second.addr, Config: &ssh.ClientConfig{
			User: "probe", Auth: []ssh.AuthMethod{ssh.PublicKeys(client.Signer)}, HostKeyCallback: ssh.FixedHostKey(other.Pub),
		}}}, StageHostKey, second.addr},
		{"first hop refuses the login", []Hop{hop(first, other), hop(second, client)}, StageAuth, first.addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBastion(t, Options{Hops: tc.hops, Name: "edge"})
			err := roundTrip(ctx, b, echo)
			var he *HopError
			if !errors.As(err, &he) || he.Stage != tc.stage || he.Hop != tc.hop || he.Bastion != "edge" {
				t.Fatalf("dial: %v, want a HopError at %s, stage %s", err, tc.hop, tc.stage)
			}
			if got := b.Stats().Connects[tc.stage]; got != 1 {
				t.Errorf("Connects[%s] = %d, want 1", tc.stage, got)
			}
		})
	}
}

// TestTargetRefusedIsNotABastionFailure checks that a target the bastion
// cannot reach fails that target only.
func TestTargetRefusedIsNotABastionFailure(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}})
	ctx := ctxTimeout(t, 30*time.Second)
	closed := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t, "127.0.0.1"))
	_, err := b.DialContext(ctx, "tcp", closed)
	var oce *ssh.OpenChannelError
	var he *HopError
	if !errors.As(err, &oce) || errors.As(err, &he) {
		t.Fatalf("dial of a closed port: %v, want the channel-open error and no HopError", err)
	}
	if !b.Stats().Up {
		t.Error("the bastion went down over a target's refusal")
	}
	if err := roundTrip(ctx, b, startEcho(t)); err != nil {
		t.Fatal(err)
	}
	if got := js.logins.Load(); got != 1 {
		t.Errorf("%d logins, want 1", got)
	}
}

// TestBastionDownAndBack checks that a bastion that disappears fails every
// dial fast with a HopError, is retried with backoff rather than once per
// dial, and is used again when it returns.
func TestBastionDownAndBack(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	echo := startEcho(t)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}, MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second})
	ctx := ctxTimeout(t, 30*time.Second)
	if err := roundTrip(ctx, b, echo); err != nil {
		t.Fatal(err)
	}

	js.stop()
	waitFor(t, func() bool { return !b.Stats().Up })
	var he *HopError
	if err := roundTrip(ctx, b, echo); !errors.As(err, &he) || he.Stage != StageConnect {
		t.Fatalf("dial with the bastion down: %v, want a connect HopError", err)
	}
	// Within the backoff, dials fail at once without new attempts.
	before := b.Stats().Connects[StageConnect]
	for range 20 {
		if err := roundTrip(ctx, b, echo); !errors.As(err, &he) {
			t.Fatalf("dial in backoff: %v, want a HopError", err)
		}
	}
	if got := b.Stats().Connects[StageConnect]; got > before+1 {
		t.Errorf("%d connection attempts for 20 dials in backoff, want at most 1", got-before)
	}

	js.listen(js.addr)
	waitFor(t, func() bool { return roundTrip(ctx, b, echo) == nil })
	if st := b.Stats(); !st.Up || st.LastError != nil {
		t.Errorf("after recovery Stats = %+v, want up without error", st)
	}
}

// TestRunReconnects checks that Run re-establishes a lost connection without
// any dial, so the bastion's up state is true between probes.
func TestRunReconnects(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	b := newBastion(t, Options{Hops: []Hop{hop(js, client)}, Connections: 2, KeepaliveInterval: 50 * time.Millisecond, MinBackoff: 50 * time.Millisecond})
	stop := testutil.Start(t, b.Run)
	defer stop()
	waitFor(t, func() bool { return b.Stats().Connections == 2 })
	js.stop()
	waitFor(t, func() bool { return !b.Stats().Up })
	js.listen(js.addr)
	waitFor(t, func() bool { return b.Stats().Connections == 2 })
}

// TestClose checks that Close ends channels and attempts and that later
// dials fail with ErrClosed.
func TestClose(t *testing.T) {
	client := sshkeys.Generate(t, "ed25519")
	js := startJump(t, client)
	echo := startEcho(t)
	b, err := New(Options{Hops: []Hop{hop(js, client)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	nc, err := b.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Error("a channel survived Close")
	}
	_ = nc.Close()
	if _, err := b.DialContext(ctx, "tcp", echo); !errors.Is(err, ErrClosed) {
		t.Errorf("dial after Close: %v, want ErrClosed", err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no hops", Options{}},
		{"hop without config", Options{Hops: []Hop{{Addr: "127.0.0.1:22"}}}},
		{"hop without port", Options{Hops: []Hop{{Addr: "127.0.0.1", Config: &ssh.ClientConfig{}}}}},
	} {
		if _, err := New(tc.opts); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStallingHopIsTheBastions checks that a dial waiting for a chain that
// does not come up (a hop that accepts TCP and never speaks SSH) ends at
// the dial's deadline with a HopError, the chain's failure and not the
// target's.
func TestStallingHopIsTheBastions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	conns := make(chan net.Conn, 16)
	held.Add(1)
	go func() {
		defer held.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- nc
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		held.Wait()
		close(conns)
		for nc := range conns {
			_ = nc.Close()
		}
	})
	client := sshkeys.Generate(t, "ed25519")
	b := newBastion(t, Options{
		Hops:           []Hop{{Addr: ln.Addr().String(), Config: &ssh.ClientConfig{User: "probe", Auth: []ssh.AuthMethod{ssh.PublicKeys(client.Signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}}},
		ConnectTimeout: 5 * time.Second,
	})
	ctx := ctxTimeout(t, 300*time.Millisecond)
	_, err = b.DialContext(ctx, "tcp", "127.0.0.1:1")
	var he *HopError
	if !errors.As(err, &he) || he.Stage != StageConnect || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial through a stalling hop: %v, want a connect HopError at the deadline", err)
	}
}
