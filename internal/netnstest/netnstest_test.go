package netnstest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

// echoRequest builds an IPv4 ICMP echo request from src to dst.
func echoRequest(t *testing.T, src, dst netip.Addr, id, seq int, data []byte) []byte {
	t.Helper()
	body, err := (&icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{ID: id, Seq: seq, Data: data},
	}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(body)))
	h[8], h[9] = 17, 1
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	return append(h, body...)
}

func TestChecksum(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		// RFC 1071 section 3: the sum of these bytes is ddf2, so the
		// checksum is its complement.
		{"rfc1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0x220d},
		{"odd length pads with zero", []byte{0x01}, 0xfeff},
		{"empty", nil, 0xffff},
		{"carry folds twice", []byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x02}, 0xfffd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := checksum(tc.in); got != tc.want {
				t.Errorf("checksum(% x) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

func TestEchoReply(t *testing.T) {
	src, dst := netip.MustParseAddr("10.203.0.1"), netip.MustParseAddr("10.204.0.1")
	valid := echoRequest(t, src, dst, 0x1234, 7, []byte("payload!"))
	mutate := func(f func(p []byte)) []byte {
		p := bytes.Clone(valid)
		f(p)
		return p
	}
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"echo request", valid, true},
		{"trailing bytes beyond total length", append(bytes.Clone(valid), 0, 0, 0), true},
		{"too short", valid[:19], false},
		{"ipv6", mutate(func(p []byte) { p[0] = 0x60 }), false},
		{"not icmp", mutate(func(p []byte) { p[9] = 6 }), false},
		{"echo reply is not answered", mutate(func(p []byte) { p[20] = icmpEchoReply }), false},
		{"fragment", mutate(func(p []byte) { p[6] |= 0x20 }), false},
		{"bad icmp checksum", mutate(func(p []byte) { p[len(p)-1] ^= 0xff }), false},
		{"bad ip checksum", mutate(func(p []byte) { p[8]++ }), false},
		{"truncated", valid[:len(valid)-1], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reply, ok := echoReply(tc.in)
			if ok != tc.ok {
				t.Fatalf("echoReply ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if len(reply) != len(valid) {
				t.Fatalf("reply length %d, want %d", len(reply), len(valid))
			}
			if checksum(reply[:20]) != 0 {
				t.Error("reply IP header checksum does not verify")
			}
			if got, want := netip.AddrFrom4([4]byte(reply[12:16])), dst; got != want {
				t.Errorf("reply source %s, want %s", got, want)
			}
			if got, want := netip.AddrFrom4([4]byte(reply[16:20])), src; got != want {
				t.Errorf("reply destination %s, want %s", got, want)
			}
			m, err := icmp.ParseMessage(1, reply[20:])
			if err != nil {
				t.Fatalf("parse reply: %v", err)
			}
			if checksum(reply[20:]) != 0 {
				t.Error("reply ICMP checksum does not verify")
			}
			echo, isEcho := m.Body.(*icmp.Echo)
			if m.Type != ipv4.ICMPTypeEchoReply || !isEcho {
				t.Fatalf("reply is %v, want an echo reply", m.Type)
			}
			if echo.ID != 0x1234 || echo.Seq != 7 || string(echo.Data) != "payload!" {
				t.Errorf("reply id/seq/data = %#x/%d/%q, want 0x1234/7/\"payload!\"", echo.ID, echo.Seq, echo.Data)
			}
		})
	}
}

// ping sends one echo request from an unprivileged ping socket and returns
// the round-trip time of its reply.
func ping(addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	c, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msg, err := (&icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{Seq: 1, Data: []byte("netnstest")},
	}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.SetDeadline(start.Add(timeout)); err != nil {
		return 0, err
	}
	if _, err := c.WriteTo(msg, &net.UDPAddr{IP: addr.AsSlice()}); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err == nil && m.Type == ipv4.ICMPTypeEchoReply {
			return time.Since(start), nil
		}
	}
}

// dial connects from the client namespace with a timeout.
func dial(t *testing.T, n *NS, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	var (
		took time.Duration
		err  error
	)
	nsErr := n.InClient(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		var d net.Dialer
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp4", addr.String())
		took = time.Since(start)
		if err == nil {
			_ = c.Close()
		}
	})
	if nsErr != nil {
		t.Fatal(nsErr)
	}
	return took, err
}

// socketNSInode returns the inode of the network namespace of socket c.
func socketNSInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		ino   uint64
		inner error
	)
	err = rc.Control(func(fd uintptr) {
		nsFD, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
		if err != nil {
			inner = err
			return
		}
		defer unix.Close(nsFD)
		var st unix.Stat_t
		if inner = unix.Fstat(nsFD, &st); inner == nil {
			ino = st.Ino
		}
	})
	if err == nil {
		err = inner
	}
	if err != nil {
		t.Fatalf("SIOCGSKNS: %v", err)
	}
	return ino
}

func TestSocketsLiveInTheClientNamespace(t *testing.T) {
	n := New(t, Options{})
	want, err := n.ClientNSInode()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		inClient bool
	}{
		{"created in InClient", true},
		{"created on the test goroutine", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				c   *net.UDPConn
				err error
			)
			open := func() { c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero}) }
			if tc.inClient {
				if nsErr := n.InClient(open); nsErr != nil {
					t.Fatal(nsErr)
				}
			} else {
				open()
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The socket is inspected from the test goroutine, i.e. from
			// a thread in the root namespace: it stays in its own.
			if got := socketNSInode(t, c); (got == want) != tc.inClient {
				t.Errorf("socket namespace inode %d, client namespace %d, want in client = %v", got, want, tc.inClient)
			}
		})
	}
}

func TestRunInRefusesBadNamespace(t *testing.T) {
	ran := false
	err := runIn("bogus", -1, func() { ran = true })
	if err == nil || ran {
		t.Fatalf("runIn with a bad descriptor: err = %v, ran = %v; want an error and fn not run", err, ran)
	}
}

func TestFaults(t *testing.T) {
	const delay = 40 * time.Millisecond
	n := New(t, Options{EchoDelay: delay})
	hostLn := n.ListenTCP(t, n.HostAddr)
	altLn := n.ListenTCP(t, n.AltAddr)

	tests := []struct {
		name  string
		fault func(t *testing.T)
		// Whether each check must succeed.
		hostTCP, altTCP, hostPing, echoPing bool
		// wantDropped is whether the rules must have dropped something.
		wantDropped bool
	}{
		{name: "no fault", fault: func(t *testing.T) { n.Clear(t) }, hostTCP: true, altTCP: true, hostPing: true, echoPing: true},
		{
			name: "blackhole one address", fault: func(t *testing.T) { n.Blackhole(t, n.AltAddr) },
			hostTCP: true, hostPing: true, echoPing: true, wantDropped: true,
		},
		{name: "blackhole everything", fault: func(t *testing.T) { n.Blackhole(t) }, wantDropped: true},
		{
			name: "total icmp loss", fault: func(t *testing.T) { n.Loss(t, 100) },
			hostTCP: true, altTCP: true, wantDropped: true,
		},
		{name: "zero icmp loss", fault: func(t *testing.T) { n.Loss(t, 0) }, hostTCP: true, altTCP: true, hostPing: true, echoPing: true},
	}
	const timeout = 300 * time.Millisecond
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fault(t)
			answered := n.EchoAnswered()
			for _, c := range []struct {
				what string
				want bool
				run  func() (time.Duration, error)
			}{
				{"tcp to host address", tc.hostTCP, func() (time.Duration, error) { return dial(t, n, hostLn, timeout) }},
				{"tcp to alt address", tc.altTCP, func() (time.Duration, error) { return dial(t, n, altLn, timeout) }},
				{"ping host address", tc.hostPing, func() (d time.Duration, err error) {
					if nsErr := n.InClient(func() { d, err = ping(n.HostAddr, timeout) }); nsErr != nil {
						t.Fatal(nsErr)
					}
					return d, err
				}},
				{"ping echo responder", tc.echoPing, func() (d time.Duration, err error) {
					if nsErr := n.InClient(func() { d, err = ping(n.EchoAddr, timeout) }); nsErr != nil {
						t.Fatal(nsErr)
					}
					return d, err
				}},
			} {
				took, err := c.run()
				switch {
				case c.want && err != nil:
					t.Errorf("%s: %v, want success", c.what, err)
				case !c.want && err == nil:
					t.Errorf("%s succeeded after %v, want a timeout", c.what, took)
				case !c.want && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, unix.ETIMEDOUT) && !isTimeout(err):
					t.Errorf("%s: %v, want a timeout", c.what, err)
				case !c.want && took > timeout+200*time.Millisecond:
					t.Errorf("%s took %v, want at most the timeout %v plus slack", c.what, took, timeout)
				}
			}
			if got := n.Dropped(t) > 0; got != tc.wantDropped {
				t.Errorf("nft dropped packets: %v, want %v", got, tc.wantDropped)
			}
			if got, want := n.EchoAnswered()-answered, 0; tc.echoPing && got == want {
				t.Error("the echo responder answered nothing")
			}
		})
	}

	t.Run("echo delay", func(t *testing.T) {
		n.Clear(t)
		var (
			rtt time.Duration
			err error
		)
		if nsErr := n.InClient(func() { rtt, err = ping(n.EchoAddr, time.Second) }); nsErr != nil {
			t.Fatal(nsErr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if rtt < delay || rtt > delay+30*time.Millisecond {
			t.Errorf("rtt %v, want within [%v, %v]", rtt, delay, delay+30*time.Millisecond)
		}
	})
}

// isTimeout reports whether err says it is a timeout through net.Error.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestCleanupReleasesEverything(t *testing.T) {
	fdsBefore, err := OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	leak := goleak.IgnoreCurrent()
	var names []string
	t.Run("harness", func(t *testing.T) {
		n := New(t, Options{EchoDelay: time.Millisecond})
		names = []string{n.ClientName, n.HostName}
		// Put the responder to work so its goroutines are busy.
		var err error
		if nsErr := n.InClient(func() { _, err = ping(n.EchoAddr, time.Second) }); nsErr != nil {
			t.Fatal(nsErr)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if len(names) == 0 {
		t.Skip("harness skipped")
	}
	if err := goleak.Find(leak); err != nil {
		t.Errorf("goroutines left behind by the harness: %v", err)
	}
	if fdsAfter, err := OpenFDs(); err != nil {
		t.Error(err)
	} else if fdsAfter > fdsBefore {
		t.Errorf("open file descriptors went from %d to %d after cleanup", fdsBefore, fdsAfter)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, name := range names {
		if strings.Contains(string(out), name) {
			t.Errorf("namespace %s still exists after the test ended:\n%s", name, out)
		}
	}
}
