package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options configures New.
type Options struct {
	// EchoDelay is how long the TUN responder waits before answering an
	// ICMP echo request to an address in EchoPrefix.
	EchoDelay time.Duration
}

// NS is a pair of test network namespaces, a client and a host, joined by a
// veth pair. Every resource is removed by t.Cleanup, also when the test
// fails. The methods that change rules must be called from the test
// goroutine; InClient and InHost may be called from any goroutine.
type NS struct {
	// ClientName and HostName are the namespace names as `ip netns`
	// shows them.
	ClientName, HostName string
	// ClientAddr is the client end of the veth pair.
	ClientAddr netip.Addr
	// HostAddr is the host end of the veth pair; the host kernel answers
	// pings and TCP on it.
	HostAddr netip.Addr
	// AltAddr is a second address of the host namespace (on its loopback),
	// reached through the same veth; useful to blackhole one address while
	// another on the same host stays healthy.
	AltAddr netip.Addr
	// EchoPrefix is routed, in the host namespace, to the TUN responder.
	EchoPrefix netip.Prefix
	// EchoAddr is an address in EchoPrefix; pinging it measures EchoDelay
	// plus the path.
	EchoAddr netip.Addr

	clientFD, hostFD int
	echo             *echoResponder
}

const (
	// nftTable and nftChain hold the fault rules in the host namespace.
	nftTable = "fx"
	nftChain = "pre"
	// vethClient, vethHost and tunName are interface names inside the test
	// namespaces (names are per namespace, so they need not be unique).
	vethClient = "fxc0"
	vethHost   = "fxh0"
	tunName    = "fxtun0"
)

// New creates the two namespaces and everything between them, or skips the
// test with the reason when this machine cannot: not root, iproute2 or
// nftables missing, the kernel refusing network namespaces or TUN devices.
// Any other failure of the setup fails the test.
func New(t testing.TB, opts Options) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netnstest: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netnstest: the ip command is missing; install the Debian package iproute2")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("netnstest: the nft command is missing; install the Debian package nftables")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("netnstest: no TUN device (%v); load the tun module or run with /dev/net/tun", err)
	}

	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("netnstest: random: %v", err)
	}
	suffix := fmt.Sprintf("%x", rnd[:4])
	n := &NS{ClientName: "fxc" + suffix, HostName: "fxh" + suffix, clientFD: -1, hostFD: -1}
	// One /30 out of 10.203.0.0/16 for the veth; the same slot in
	// 10.204.0.0/16 is the echo prefix and in 10.205.0.0/16 the extra
	// address. Picked at random so parallel tests differ, though the
	// namespaces would keep them apart anyway.
	slot := binary.BigEndian.Uint16(rnd[4:]) &^ 3
	base := func(second byte, off uint16) netip.Addr {
		v := slot + off
		return netip.AddrFrom4([4]byte{10, second, byte(v >> 8), byte(v)})
	}
	n.ClientAddr, n.HostAddr = base(203, 1), base(203, 2)
	n.AltAddr = base(205, 1)
	n.EchoPrefix = netip.PrefixFrom(base(204, 0), 30)
	n.EchoAddr = base(204, 1)

	if out, err := ipCmd("netns", "add", n.ClientName); err != nil {
		t.Skipf("netnstest: the kernel refused a network namespace: ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { n.deleteNS(t, n.ClientName) })
	n.must(t, "netns", "add", n.HostName)
	t.Cleanup(func() { n.deleteNS(t, n.HostName) })

	var err error
	if n.clientFD, err = openNS(n.ClientName); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	if n.hostFD, err = openNS(n.HostName); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	// The veth is created inside the client namespace and its peer moved
	// straight into the host namespace: neither end ever exists in the
	// root namespace.
	n.must(t, "-n", n.ClientName, "link", "add", vethClient, "type", "veth",
		"peer", "name", vethHost, "netns", n.HostName)
	n.must(t, "-n", n.ClientName, "link", "set", "lo", "up")
	n.must(t, "-n", n.HostName, "link", "set", "lo", "up")
	n.must(t, "-n", n.ClientName, "addr", "add", n.ClientAddr.String()+"/30", "dev", vethClient)
	n.must(t, "-n", n.HostName, "addr", "add", n.HostAddr.String()+"/30", "dev", vethHost)
	n.must(t, "-n", n.HostName, "addr", "add", n.AltAddr.String()+"/32", "dev", "lo")
	n.must(t, "-n", n.ClientName, "link", "set", vethClient, "up")
	n.must(t, "-n", n.HostName, "link", "set", vethHost, "up")
	n.must(t, "-n", n.ClientName, "route", "add", "default", "via", n.HostAddr.String())
	// Both ICMP socket kinds must work in the client namespace: raw
	// sockets through root's CAP_NET_RAW, ping sockets through this range.
	n.sysctl(t, n.ClientName, "net.ipv4.ping_group_range=0 2147483647")
	n.sysctl(t, n.HostName, "net.ipv4.ip_forward=1")
	n.nft(t, fmt.Sprintf("add table inet %s", nftTable))
	n.nft(t, fmt.Sprintf("add chain inet %s %s { type filter hook prerouting priority filter; policy accept; }",
		nftTable, nftChain))

	// The TUN device must be created by a thread inside the host
	// namespace: the kernel puts it in the namespace of the opener.
	var (
		echo   *echoResponder
		tunErr error
	)
	if err := n.InHost(func() { echo, tunErr = startEchoResponder(tunName, opts.EchoDelay) }); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	if tunErr != nil {
		if errors.Is(tunErr, unix.EPERM) || errors.Is(tunErr, unix.ENODEV) {
			t.Skipf("netnstest: the kernel refused a TUN device: %v", tunErr)
		}
		t.Fatalf("netnstest: %v", tunErr)
	}
	n.echo = echo
	t.Cleanup(echo.close)
	n.must(t, "-n", n.HostName, "link", "set", tunName, "up")
	n.must(t, "-n", n.HostName, "route", "add", n.EchoPrefix.String(), "dev", tunName)
	return n
}

// InClient runs fn on an OS thread inside the client namespace and returns
// when fn has. Sockets fn creates on its own goroutine live in the client
// namespace. fn runs on another goroutine than the caller's, so it must not
// call t.FailNow, t.Fatal or t.Skip. The error is about entering the
// namespace; fn did not run if it is not nil.
func (n *NS) InClient(fn func()) error { return runIn(n.ClientName, n.clientFD, fn) }

// InHost is InClient for the host namespace.
func (n *NS) InHost(fn func()) error { return runIn(n.HostName, n.hostFD, fn) }

// runIn runs fn on a locked thread moved into the namespace nsFD.
func runIn(name string, nsFD int, fn func()) error {
	want, err := nsInode(fmt.Sprintf("/proc/self/fd/%d", nsFD))
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves the root namespace, so it
		// must die with this goroutine rather than serve others.
		runtime.LockOSThread()
		if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns into %s: %w", name, err)
			return
		}
		got, err := nsInode("/proc/thread-self/ns/net")
		if err != nil {
			done <- fmt.Errorf("namespace %s: %w", name, err)
			return
		}
		if got != want {
			done <- fmt.Errorf("setns into %s: thread is in namespace inode %d, want %d", name, got, want)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic in namespace %s: %v", name, r)
			}
		}()
		fn()
		done <- nil
	}()
	return <-done
}

// nsInode returns the inode number identifying the namespace file at path.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// openNS opens the bind mount `ip netns add` created for name.
func openNS(name string) (int, error) {
	path := "/var/run/netns/" + name
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// ClientNSInode returns the inode of the client namespace, to compare with
// what SIOCGSKNS or /proc report for a socket or thread.
func (n *NS) ClientNSInode() (uint64, error) {
	return nsInode(fmt.Sprintf("/proc/self/fd/%d", n.clientFD))
}

// deleteNS closes the harness's descriptor of the namespace and deletes it;
// the veth pair and the TUN device go with it.
func (n *NS) deleteNS(t testing.TB, name string) {
	t.Helper()
	fd := &n.clientFD
	if name == n.HostName {
		fd = &n.hostFD
	}
	if *fd >= 0 {
		_ = unix.Close(*fd)
		*fd = -1
	}
	if out, err := ipCmd("netns", "del", name); err != nil {
		t.Errorf("netnstest: ip netns del %s: %v: %s", name, err, out)
	}
}

// Loss makes the host namespace drop percent per cent of the ICMP echo
// requests it receives, at random (nftables numgen), replacing any earlier
// rule. Only requests are matched: the TUN responder's replies also enter
// the host namespace through prerouting, and a dropped reply would be a
// second, uncounted loss. So for a pinger Sent-Received equals Dropped.
// Zero adds no rule; 100 drops every request.
func (n *NS) Loss(t testing.TB, percent int) {
	t.Helper()
	if percent < 0 || percent > 100 {
		t.Fatalf("netnstest: loss %d%% out of range", percent)
	}
	n.Clear(t)
	match := "ip protocol icmp icmp type echo-request"
	switch percent {
	case 0:
		return
	case 100:
		// numgen values are 0..99, so "< 100" is rejected as out of range.
	default:
		match += fmt.Sprintf(" numgen random mod 100 < %d", percent)
	}
	n.nft(t, fmt.Sprintf("add rule inet %s %s %s counter drop", nftTable, nftChain, match))
}

// Blackhole makes the host namespace silently drop every IPv4 packet it
// receives for the given addresses, or every packet at all when none are
// given, replacing any earlier rule. Nothing is answered: no RST, no ICMP
// error, so connects and pings time out.
func (n *NS) Blackhole(t testing.TB, addrs ...netip.Addr) {
	t.Helper()
	n.Clear(t)
	rule := "counter drop"
	if len(addrs) > 0 {
		s := make([]string, len(addrs))
		for i, a := range addrs {
			if !a.Is4() {
				t.Fatalf("netnstest: blackhole %s: only IPv4 addresses are supported", a)
			}
			s[i] = a.String()
		}
		rule = fmt.Sprintf("ip daddr { %s } counter drop", strings.Join(s, ", "))
	}
	n.nft(t, fmt.Sprintf("add rule inet %s %s %s", nftTable, nftChain, rule))
}

// Clear removes every fault rule.
func (n *NS) Clear(t testing.TB) {
	t.Helper()
	n.nft(t, fmt.Sprintf("flush chain inet %s %s", nftTable, nftChain))
}

// nftCounter matches the counters of `nft list chain`.
var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+`)

// Dropped returns how many packets the current fault rules have dropped.
func (n *NS) Dropped(t testing.TB) int {
	t.Helper()
	out := n.nft(t, fmt.Sprintf("list chain inet %s %s", nftTable, nftChain))
	sum := 0
	for _, m := range nftCounter.FindAllStringSubmatch(out, -1) {
		v, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatalf("netnstest: nft counter %q: %v", m[1], err)
		}
		sum += v
	}
	return sum
}

// EchoAnswered returns how many echo requests the TUN responder has
// answered.
func (n *NS) EchoAnswered() int { return int(n.echo.answered.Load()) }

// ListenTCP opens a TCP listener on addr (port chosen by the kernel) inside
// the host namespace, closed when the test ends, and returns its address.
// Nothing accepts: the kernel completes handshakes into the backlog, which
// is all a connect probe needs.
func (n *NS) ListenTCP(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	if nsErr := n.InHost(func() { ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String()) }); nsErr != nil {
		t.Fatalf("netnstest: %v", nsErr)
	}
	if err != nil {
		t.Fatalf("netnstest: listen in host namespace: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// must runs ip with args and fails the test if it fails.
func (n *NS) must(t testing.TB, args ...string) {
	t.Helper()
	if out, err := ipCmd(args...); err != nil {
		t.Fatalf("netnstest: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// sysctl sets one sysctl inside the namespace ns.
func (n *NS) sysctl(t testing.TB, ns, setting string) {
	t.Helper()
	n.must(t, "netns", "exec", ns, "sysctl", "-q", "-w", setting)
}

// nft runs one nft command in the host namespace and returns its output.
func (n *NS) nft(t testing.TB, command string) string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.HostName, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(command + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("netnstest: nft %s: %v: %s", command, err, out.String())
	}
	return out.String()
}

// ipCmd runs ip with args and returns its combined output.
func ipCmd(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// OpenFDs returns how many file descriptors this process has open.
func OpenFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	// ReadDir's own descriptor is closed again before it returns but is
	// listed; it is counted every time, so differences are exact.
	return len(ents), nil
}

// ClientDialer returns a dial function whose sockets are created inside the
// client namespace, from any goroutine: one locked thread in the namespace
// dials on request. It is for code that opens its sockets on goroutines of
// its own (a resolver's shared queries), where InClient cannot reach. The
// thread ends with the test.
func (n *NS) ClientDialer(t testing.TB) func(ctx context.Context, network, address string) (net.Conn, error) {
	t.Helper()
	type result struct {
		conn net.Conn
		err  error
	}
	type request struct {
		ctx              context.Context
		network, address string
		reply            chan result
	}
	reqs := make(chan request)
	done := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		ended <- n.InClient(func() {
			for {
				select {
				case <-done:
					return
				case r := <-reqs:
					var d net.Dialer
					c, err := d.DialContext(r.ctx, r.network, r.address)
					r.reply <- result{c, err}
				}
			}
		})
	}()
	t.Cleanup(func() {
		close(done)
		if err := <-ended; err != nil {
			t.Errorf("netnstest: dialer: %v", err)
		}
	})
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		reply := make(chan result, 1)
		select {
		case reqs <- request{ctx, network, address, reply}:
		case <-done:
			return nil, errors.New("netnstest: dialer closed with its test")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r := <-reply
		return r.conn, r.err
	}
}
