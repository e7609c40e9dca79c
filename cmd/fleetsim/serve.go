package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/devicesim"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
)

// handshakeGrace bounds how long a connection may take from banner to
// authenticated session on top of the configured delays, like sshd's
// LoginGraceTime, so a stalled client cannot pin a connection forever.
const handshakeGrace = time.Minute

// serveOptions configure one serving process (or one shard of the fleet).
type serveOptions struct {
	Fleet fleetOptions
	// AuthorizedKey is the only client key accepted.
	AuthorizedKey ssh.PublicKey
	// DelayBanner, DelayAuth and DelayCommand are added before the server
	// sends its version banner, before it answers the public key check and
	// before a command starts.
	DelayBanner, DelayAuth, DelayCommand time.Duration
	// SlowDelay is how long commands take on slow hosts.
	SlowDelay time.Duration
	// Device serves every host that gets to a handshake as an IOS-class
	// device accepting DeviceUser with DevicePassword.
	Device                     bool
	DeviceUser, DevicePassword string
	// Shard and Shards select the hosts [Shard*N/Shards, (Shard+1)*N/Shards);
	// Shards 0 means the whole fleet.
	Shard, Shards int
	// ClassesFile, when set, receives the class of every host of the fleet as
	// JSON (the same content gen writes to classes.json).
	ClassesFile string
	// Ready receives "ready N\n" once every listener of this process is up.
	Ready io.Writer
	// Logger must not be nil.
	Logger *slog.Logger
}

// shardRange returns the half-open index range of the hosts this process
// serves.
func (o *serveOptions) shardRange() (int, int, error) {
	n := o.Fleet.N
	if o.Shards == 0 {
		return 0, n, nil
	}
	if o.Shards < 0 || o.Shard < 0 || o.Shard >= o.Shards {
		return 0, 0, fmt.Errorf("shard %d of %d is out of range", o.Shard, o.Shards)
	}
	return o.Shard * n / o.Shards, (o.Shard + 1) * n / o.Shards, nil
}

// servedHost is a simHost plus its lazily built server configuration: deriving
// an ed25519 key is cheap, but doing it for 10k hosts at start is wasted when
// most are never contacted, and the config must stay per host because x/crypto
// keeps host keys in ssh.ServerConfig.
type servedHost struct {
	simHost
	once sync.Once
	cfg  *ssh.ServerConfig
	err  error
}

// server holds what the hosts of one process share; the connections
// themselves are served by an sshserver.Server.
type server struct {
	opts       *serveOptions
	done       <-chan struct{}
	authorized []byte
	accept     func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error)
	reject     func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error)
}

// serve listens on every non-refused host of the selected shard, writes
// "ready N" to opts.Ready and serves until ctx ends; then it closes all
// listeners and connections, waits for every goroutine it started and returns
// nil.
func serve(ctx context.Context, opts *serveOptions) error {
	if opts.AuthorizedKey == nil {
		return errors.New("no authorized key")
	}
	if opts.Ready == nil || opts.Logger == nil {
		return errors.New("serve needs a Ready writer and a Logger")
	}
	for name, d := range map[string]time.Duration{
		"--delay.banner": opts.DelayBanner, "--delay.auth": opts.DelayAuth,
		"--delay.command": opts.DelayCommand, "--slow-delay": opts.SlowDelay,
	} {
		if d < 0 {
			return fmt.Errorf("%s must not be negative, got %s", name, d)
		}
	}
	fleet, err := buildFleet(&opts.Fleet)
	if err != nil {
		return err
	}
	if opts.ClassesFile != "" {
		if err := writeClasses(opts.ClassesFile, fleet); err != nil {
			return err
		}
	}
	lo, hi, err := opts.shardRange()
	if err != nil {
		return err
	}

	s := &server{
		opts:       opts,
		done:       ctx.Done(),
		authorized: opts.AuthorizedKey.Marshal(),
	}
	s.accept = s.publicKeyCallback(false)
	s.reject = s.publicKeyCallback(true)

	hosts := make([]servedHost, hi-lo)
	var counts [numClasses]int
	drift := 0
	for i := range hosts {
		hosts[i].simHost = fleet[lo+i]
		counts[hosts[i].Class]++
		if hosts[i].Drift {
			drift++
		}
	}
	log := opts.Logger
	if limit, ok := fdLimit(); ok && uint64(len(hosts)-counts[classRefused]) > limit/2 {
		log.Warn("listeners use more than half of the fd limit; connections may fail, consider --workers",
			"listeners", len(hosts)-counts[classRefused], "fd_limit", limit)
	}

	listeners := make([]net.Listener, 0, len(hosts)-counts[classRefused])
	var lc net.ListenConfig
	for i := range hosts {
		if hosts[i].Class == classRefused {
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", hostPort(hosts[i].Addr, opts.Fleet.Port))
		if err != nil {
			for _, l := range listeners {
				_ = l.Close()
			}
			return fmt.Errorf("listen for host %s: %w", hosts[i].Addr, err)
		}
		listeners = append(listeners, ln)
	}
	// Start serving only once every listen succeeded, so a failed start
	// leaves no goroutine behind.
	srv := sshserver.New(log)
	var wg sync.WaitGroup
	j := 0
	for i := range hosts {
		if hosts[i].Class == classRefused {
			continue
		}
		h, ln := s.host(&hosts[i]), listeners[j]
		j++
		wg.Go(func() { _ = srv.Serve(ln, h) })
	}

	attrs := []any{"hosts", len(hosts), "listeners", len(listeners), "port", opts.Fleet.Port, "drift", drift}
	for c := range numClasses {
		attrs = append(attrs, c.String(), counts[c])
	}
	if len(hosts) > 0 {
		attrs = append(attrs, "first", hosts[0].Addr.String(), "last", hosts[len(hosts)-1].Addr.String())
	}
	log.Info("serving simulated hosts", attrs...)
	_, err = fmt.Fprintf(opts.Ready, "ready %d\n", len(hosts))
	if err != nil {
		log.Error("cannot report readiness", "err", err)
	}

	<-ctx.Done()
	_ = srv.Close()
	wg.Wait()
	log.Info("stopped serving simulated hosts")
	return nil
}

// host returns how the connections of h are served: tarpit hosts never get
// to a handshake, the others after the banner delay, with commands answered
// by h's class.
func (s *server) host(h *servedHost) *sshserver.Host {
	if s.opts.Device {
		return s.device(h)
	}
	return &sshserver.Host{
		Name: h.Addr.String(),
		PreHandshake: func(nc net.Conn) bool {
			if h.Class == classTarpit {
				// Never send a banner; hold the connection until the client
				// (or shutdown) closes it. Whatever the client sends is
				// discarded.
				sshserver.Discard(nc)
				return false
			}
			return s.wait(s.opts.DelayBanner, nil)
		},
		Config:           func() (*ssh.ServerConfig, error) { return s.serverConfig(h) },
		HandshakeTimeout: s.opts.DelayAuth + handshakeGrace,
		Exec: func(string) func(*sshserver.Session) {
			return func(sess *sshserver.Session) { s.runCommand(h, sess) }
		},
	}
}

// defaultDevicePassword is the password serve --device and gen --device
// agree on unless told otherwise.
const defaultDevicePassword = "fleetsim"

// device returns h served as an IOS-class device. Its host key is the
// host's derived key, so gen's known_hosts fits; drift hosts report another
// software version, auth_reject hosts accept no password. The other fault
// classes keep their connection-level behaviour (refused, tarpit).
func (s *server) device(h *servedHost) *sshserver.Host {
	d := &devicesim.Device{
		Hostname: "sim-" + strings.ReplaceAll(h.Addr.String(), ".", "-"),
		Version:  "15.2(4)M11",
		User:     s.opts.DeviceUser,
		Password: s.opts.DevicePassword,
	}
	if h.Drift {
		d.Version = "15.7(3)M8"
	}
	if h.Class == classAuthReject {
		d.Password = "\x00never"
	}
	host := d.Host()
	host.HandshakeTimeout = handshakeGrace
	config := host.Config
	// Connections come concurrently; the key is derived once, before the
	// device is first used, and never changed afterwards.
	host.Config = func() (*ssh.ServerConfig, error) {
		h.once.Do(func() {
			signer, err := hostSigner(s.opts.Fleet.Seed, h.Addr)
			if err != nil {
				h.err = fmt.Errorf("derive host key: %w", err)
				return
			}
			d.HostKey = signer
		})
		if h.err != nil {
			return nil, h.err
		}
		return config()
	}
	host.PreHandshake = func(nc net.Conn) bool {
		if h.Class == classTarpit {
			sshserver.Discard(nc)
			return false
		}
		return s.wait(s.opts.DelayBanner, nil)
	}
	return host
}

// wait sleeps for d and reports whether it elapsed; it returns false early
// when the server shuts down or stop (which may be nil) is closed.
func (s *server) wait(d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-s.done:
			return false
		case <-stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	case <-stop:
		return false
	}
}

// serverConfig returns the host's ssh.ServerConfig, building it on first use.
func (s *server) serverConfig(h *servedHost) (*ssh.ServerConfig, error) {
	h.once.Do(func() {
		signer, err := hostSigner(s.opts.Fleet.Seed, h.Addr)
		if err != nil {
			h.err = fmt.Errorf("derive host key: %w", err)
			return
		}
		cfg := &ssh.ServerConfig{
			ServerVersion:     "SSH-2.0-fleetsim",
			PublicKeyCallback: s.accept,
		}
		if h.Class == classAuthReject {
			cfg.PublicKeyCallback = s.reject
		}
		cfg.AddHostKey(signer)
		h.cfg = cfg
	})
	return h.cfg, h.err
}

// publicKeyCallback accepts only the authorized key, or nothing when
// rejectAll is set. x/crypto caches the answer per key and connection, so the
// auth delay is paid once per key even though clients first query and then
// sign.
func (s *server) publicKeyCallback(rejectAll bool) func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
	return func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if !s.wait(s.opts.DelayAuth, nil) {
			return nil, errors.New("shutting down")
		}
		if rejectAll || !bytes.Equal(key.Marshal(), s.authorized) {
			return nil, errors.New("public key not authorized")
		}
		return &ssh.Permissions{}, nil
	}
}

// runCommand answers one exec request according to the host's class.
func (s *server) runCommand(h *servedHost, sess *sshserver.Session) {
	if !s.wait(s.opts.DelayCommand, sess.Closed()) {
		return
	}
	switch h.Class {
	case classHang:
		// Never exit; the client has to give up and close the channel.
		select {
		case <-sess.Closed():
		case <-s.done:
		}
		return
	case classSlow:
		if !s.wait(s.opts.SlowDelay, sess.Closed()) {
			return
		}
	}
	out, status := commandOutput(s.opts.Fleet.Seed, &h.simHost, sess.Command)
	if _, err := sess.Write(out); err != nil {
		return
	}
	sess.Exit(status)
}
