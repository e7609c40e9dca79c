//go:build linux

package icmp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The shared ICMP engine.
//
// One socket per address family and source address serves every probe of an
// Prober: an unprivileged ping socket (SOCK_DGRAM, IPPROTO_ICMP[V6]) or one
// raw socket. Targets without a source address share the unbound socket of
// their family; a set with a source_address gets a socket bound to it, so
// its requests leave from that address. Sockets are opened on first use.
// A single reader goroutine per socket drains replies with recvmmsg and hands
// each one to the probe waiting for it, found by the token that the probe
// writes into the echo payload. Probes send from their own goroutine (the
// pool bounds how many run at once) and block until every reply has arrived
// or their round ends.
//
// Echo payload layout (network byte order), payloadHeader bytes:
//
//	[0:4]   engine cookie (random per engine; foreign replies never match)
//	[4:8]   probe token (unique among the probes in flight)
//	[8:16]  send time, Unix nanoseconds (for packet captures; RTTs use the
//	        probe's own monotonic record)
//
// The sequence number is the packet's index within its probe. In raw mode
// the ICMP ID is the engine's random ID and replies with another ID are
// dropped before the payload is looked at; ping sockets rewrite the ID to
// the socket's "port", so it is not checked there (the kernel only delivers
// the socket's own replies anyway).

const (
	// payloadHeader is the part of the echo payload the engine uses; a
	// smaller configured size is raised to it.
	payloadHeader = 16
	// recvBuffer is the socket receive buffer the engine asks for. A reply
	// costs about 1 KiB of buffer (skb truesize) on loopback, so 8 MiB (the
	// kernel doubles it to 16 MiB) absorbs bursts of thousands of replies
	// while the reader is descheduled.
	recvBuffer = 8 << 20
	// sendBuffer keeps sends from hitting EAGAIN during bursts.
	sendBuffer = 1 << 20
	// batch is how many datagrams one recvmmsg call may return.
	batch = 64
	// readSize is the receive buffer per datagram: the largest IPv4
	// header, the ICMP header and our payload header. Longer replies are
	// truncated by the kernel, which is fine: nothing past the header is
	// read.
	readSize = 60 + 8 + payloadHeader
	// sendRetry is how long a send waits before retrying after EAGAIN.
	sendRetry = 100 * time.Microsecond
)

// errEngineUnavailable marks a shared socket that could not be opened;
// the prober then falls back to pro-bing for the probe.
var errEngineUnavailable = errors.New("shared ICMP socket unavailable")

// errClosed is returned by probes that run after, or during, Close.
var errClosed = errors.New("icmp prober closed")

// sharedEngine owns the shared sockets of one Prober. Its zero value is
// not usable; newEngine allocates it without opening anything.
type sharedEngine struct {
	privileged bool
	logger     *slog.Logger
	// id is the ICMP ID of our requests in raw mode.
	id uint16
	// cookie marks our payloads.
	cookie uint32
	// waits recycles per-probe state.
	waits sync.Pool
	// readers counts the running reader goroutines.
	readers sync.WaitGroup
	// done is closed by close to wake probes in flight.
	done chan struct{}

	// mu guards socks and closed.
	mu sync.Mutex
	// socks holds the sockets opened so far.
	socks  map[sockKey]*engineSocket
	closed bool

	// pmu guards pending and nextToken, and the reply fields of every
	// registered waiter.
	pmu       sync.Mutex
	pending   map[uint32]*waiter
	nextToken uint32
}

// sockKey names one shared socket: its family and the address it is bound
// to, the zero Addr for the kernel's choice.
type sockKey struct {
	v6  bool
	src netip.Addr
}

// engineSocket is one open shared socket.
type engineSocket struct {
	key sockKey
	f   *os.File
	rc  syscall.RawConn
	v6  bool
	// raw is true for raw sockets, whose IPv4 replies carry the IP header.
	raw bool
}

// waiter is the state of one probe in flight. The fields after pmu's
// comment are written by the reader under sharedEngine.pmu.
type waiter struct {
	token uint32
	addr  netip.Addr
	count int
	// sendAt[i] is when packet i was sent; written by the probe before the
	// send, read by the reader under pmu after the reply.
	sendAt []time.Time
	// done receives one value when all count replies have arrived.
	done  chan struct{}
	timer *time.Timer
	pkt   []byte
	sa4   unix.SockaddrInet4
	sa6   unix.SockaddrInet6

	// Guarded by sharedEngine.pmu:
	sent   int      // packets handed to the kernel
	got    []uint64 // bitmap of sequence numbers answered
	recv   int
	rttSum time.Duration
}

// newEngine returns an engine for the given socket mode. It opens no
// socket and starts no goroutine: the first probe of each address family
// does that.
func newEngine(mode Mode, logger *slog.Logger) *sharedEngine {
	e := &sharedEngine{
		privileged: mode == ModePrivileged,
		logger:     logger,
		id:         uint16(rand.Uint32()),
		cookie:     rand.Uint32(),
		done:       make(chan struct{}),
		socks:      make(map[sockKey]*engineSocket),
		pending:    make(map[uint32]*waiter),
		nextToken:  rand.Uint32(),
	}
	e.waits.New = func() any {
		w := &waiter{done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
		return w
	}
	return e
}

// close closes the sockets, wakes the probes in flight and waits for the
// reader goroutines to end. It is safe to call more than once.
func (e *sharedEngine) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	close(e.done)
	socks := e.socks
	e.socks = nil
	e.mu.Unlock()
	for _, s := range socks {
		// Close waits for the reader to leave its read call, then the
		// reader returns and the file descriptor is released.
		_ = s.f.Close()
	}
	e.readers.Wait()
}

// socket returns the shared socket of k, opening it and starting its
// reader on first use. A socket the kernel refuses is errEngineUnavailable;
// a source address it cannot bind is not, since pro-bing could not send from
// it either, and nothing is kept: the next probe tries again, so a source
// address that comes back (an interface up again) is used.
func (e *sharedEngine) socket(k sockKey) (*engineSocket, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errClosed
	}
	if s := e.socks[k]; s != nil {
		return s, nil
	}
	s, err := e.open(k)
	if err != nil {
		return nil, err
	}
	e.socks[k] = s
	e.readers.Add(1)
	go e.read(s)
	e.logger.Debug("Opened shared ICMP socket", "ipv6", k.v6, "source", k.src, "privileged", e.privileged)
	return s, nil
}

// open creates one non-blocking socket, binds it to k's source address if
// there is one, sets its buffers, kernel timestamps and (raw sockets) the
// ICMP type filter, and registers it with the runtime poller.
func (e *sharedEngine) open(k sockKey) (*engineSocket, error) {
	v6 := k.v6
	domain, proto, typ := unix.AF_INET, unix.IPPROTO_ICMP, unix.SOCK_DGRAM
	if v6 {
		domain, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	if e.privileged {
		typ = unix.SOCK_RAW
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errEngineUnavailable, os.NewSyscallError("socket", err))
	}
	if err := setupSocket(fd, v6, e.privileged); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%w: %w", errEngineUnavailable, err)
	}
	if k.src.IsValid() {
		// A ping socket bound with port 0 still gets its ICMP ID from the
		// kernel; a bound raw socket receives only packets to its address.
		var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: k.src.Unmap().As4()}
		if v6 {
			sa = &unix.SockaddrInet6{Addr: k.src.As16(), ZoneId: zoneID(k.src.Zone())}
		}
		if err := unix.Bind(fd, sa); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("icmp bind to source address %s: %w", k.src, os.NewSyscallError("bind", err))
		}
	}
	f := os.NewFile(uintptr(fd), "icmp")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &engineSocket{key: k, f: f, rc: rc, v6: v6, raw: e.privileged}, nil
}

// setupSocket applies the socket options the engine relies on. Only the
// filter is required; buffers and timestamps are best effort.
func setupSocket(fd int, v6, raw bool) error {
	// SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN;
	// SO_RCVBUF is capped by rmem_max.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if !raw {
		return nil
	}
	// A raw socket sees every ICMP packet the host receives; let the kernel
	// drop all but echo replies so the reader is not woken for them.
	if v6 {
		var f unix.ICMPv6Filter
		for i := range f.Data {
			f.Data[i] = ^uint32(0) // block everything ...
		}
		f.Data[icmpv6EchoReply>>5] &^= 1 << (icmpv6EchoReply & 31) // ... but echo replies
		if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return os.NewSyscallError("setsockopt ICMPV6_FILTER", err)
		}
		return nil
	}
	// ICMP_FILTER takes a bitmask of the types to drop.
	if err := unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(^int32(1<<icmpv4EchoReply))); err != nil {
		return os.NewSyscallError("setsockopt ICMP_FILTER", err)
	}
	return nil
}

// ICMP message types the engine sends and accepts.
const (
	icmpv4EchoReply   = 0
	icmpv4EchoRequest = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

// ping runs one round: r.count echo requests r.interval apart, waiting for
// the replies until all have arrived, r.timeout has passed since the start,
// ctx ends or the engine closes. The error is errEngineUnavailable
// (wrapped) when the socket cannot be opened and nothing was sent, a send
// error, or errClosed; the stats are valid in every case.
func (e *sharedEngine) ping(ctx context.Context, r roundSpec) (stats, error) {
	deadline := time.Now().Add(r.timeout)
	v6 := !r.addr.Is4() && !r.addr.Is4In6()
	k := sockKey{v6: v6}
	if r.src.IsValid() {
		if srcV6 := !r.src.Is4() && !r.src.Is4In6(); srcV6 != v6 {
			return stats{}, fmt.Errorf("icmp: source address %s and target address %s are of different families", r.src, r.addr)
		}
		k.src = r.src
		if !v6 {
			k.src = r.src.Unmap()
		}
	}
	s, err := e.socket(k)
	if err != nil {
		return stats{}, err
	}
	w := e.register(r)
	defer e.release(w)

	var sendErr error
	for i := 0; i < r.count; i++ {
		if i > 0 && !w.wait(ctx, e.done, min(r.interval, time.Until(deadline))) {
			break // ended before the next packet was due
		}
		if time.Until(deadline) <= 0 || ctx.Err() != nil {
			break
		}
		if sendErr = e.send(ctx, s, w, i, deadline); sendErr != nil {
			break
		}
	}
	e.pmu.Lock()
	allSent := w.sent == r.count
	e.pmu.Unlock()
	if sendErr == nil && allSent {
		// Wait for the rest of the replies; done fires once all are in.
		select {
		case <-w.done:
		default:
			w.wait(ctx, e.done, time.Until(deadline))
		}
	}

	e.pmu.Lock()
	delete(e.pending, w.token)
	st := stats{sent: w.sent, recv: w.recv, rttSum: w.rttSum}
	e.pmu.Unlock()
	if sendErr != nil {
		return st, sendErr
	}
	select {
	case <-e.done:
		return st, errClosed
	default:
	}
	return st, nil
}

// wait blocks for d, until all replies have arrived, ctx ends or closed is
// closed. It reports whether d passed without any of the others happening.
func (w *waiter) wait(ctx context.Context, closed <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	w.timer.Reset(d)
	defer w.timer.Stop()
	select {
	case <-w.timer.C:
		return true
	case <-w.done:
		// All replies arrived: possible only once every packet is sent.
		return false
	case <-ctx.Done():
		return false
	case <-closed:
		return false
	}
}

// register takes a wait from the pool, sizes it for r and enters it under a
// fresh token.
func (e *sharedEngine) register(r roundSpec) *waiter {
	w := e.waits.Get().(*waiter)
	w.addr, w.count = r.addr, r.count
	w.sendAt = slicesResize(w.sendAt, r.count)
	words := (r.count + 63) / 64
	w.got = slicesResize(w.got, words)
	clear(w.got)
	n := 8 + max(r.size, payloadHeader)
	if cap(w.pkt) < n {
		w.pkt = make([]byte, n)
	}
	w.pkt = w.pkt[:n]
	e.fillPacket(w)
	if r.addr.Is4() || r.addr.Is4In6() {
		w.sa4 = unix.SockaddrInet4{Addr: r.addr.Unmap().As4()}
	} else {
		w.sa6 = unix.SockaddrInet6{Addr: r.addr.As16(), ZoneId: zoneID(r.addr.Zone())}
	}

	e.pmu.Lock()
	for {
		e.nextToken++
		if _, busy := e.pending[e.nextToken]; !busy {
			break
		}
	}
	w.token = e.nextToken
	w.sent, w.recv, w.rttSum = 0, 0, 0
	e.pending[w.token] = w
	e.pmu.Unlock()
	binary.BigEndian.PutUint32(w.pkt[12:16], w.token)
	return w
}

// release returns w to the pool once it is no longer registered.
func (e *sharedEngine) release(w *waiter) {
	select { // a completion signal may be left over
	case <-w.done:
	default:
	}
	e.waits.Put(w)
}

// fillPacket writes the parts of w's echo request that do not change
// between its packets: header, ID, cookie and padding.
func (e *sharedEngine) fillPacket(w *waiter) {
	p := w.pkt
	clear(p[:8])
	p[0] = icmpv4EchoRequest
	if !w.addr.Is4() && !w.addr.Is4In6() {
		p[0] = icmpv6EchoRequest
	}
	binary.BigEndian.PutUint16(p[4:6], e.id)
	binary.BigEndian.PutUint32(p[8:12], e.cookie)
	for i := 8 + payloadHeader; i < len(p); i++ {
		p[i] = byte(i)
	}
}

// send stamps packet seq of w and hands it to the kernel, retrying while the
// socket buffer is full until deadline or ctx ends.
func (e *sharedEngine) send(ctx context.Context, s *engineSocket, w *waiter, seq int, deadline time.Time) error {
	p := w.pkt
	binary.BigEndian.PutUint16(p[6:8], uint16(seq))
	now := time.Now()
	binary.BigEndian.PutUint64(p[16:24], uint64(now.UnixNano()))
	if !s.v6 && s.raw {
		// Ping sockets and ICMPv6 raw sockets have the kernel checksum;
		// raw IPv4 sockets send what we give them.
		p[2], p[3] = 0, 0
		binary.BigEndian.PutUint16(p[2:4], checksum(p))
	}
	var sa unix.Sockaddr = &w.sa4
	if s.v6 {
		sa = &w.sa6
	}
	e.pmu.Lock()
	w.sendAt[seq] = now
	w.sent = seq + 1
	e.pmu.Unlock()
	for {
		var serr error
		cerr := s.rc.Control(func(fd uintptr) {
			serr = unix.Sendto(int(fd), p, 0, sa)
		})
		if cerr == nil && serr == nil {
			return nil
		}
		if cerr != nil || (serr != unix.EAGAIN && serr != unix.ENOBUFS && serr != unix.EINTR) {
			e.pmu.Lock()
			w.sent = seq
			e.pmu.Unlock()
			if cerr != nil {
				// Only a closed socket makes Control fail.
				return fmt.Errorf("%w: %w", errClosed, cerr)
			}
			return fmt.Errorf("icmp send to %s: %w", w.addr, os.NewSyscallError("sendto", serr))
		}
		// The socket buffer is full: wait a little and retry, within the
		// round.
		if !w.wait(ctx, e.done, min(sendRetry, time.Until(deadline))) {
			e.pmu.Lock()
			w.sent = seq
			e.pmu.Unlock()
			if err := ctx.Err(); err != nil {
				return nil // the round just ended; judged by the replies
			}
			select {
			case <-e.done:
				return errClosed
			default:
			}
			return nil
		}
	}
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// zoneID turns an IPv6 zone (interface name or index) into an interface
// index; unknown zones give 0.
func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// slicesResize returns s with length n, reusing its array when it is large
// enough.
func slicesResize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// readBatch is the reader's receive state: batch message headers
// with their buffers, source addresses and control buffers.
type readBatch struct {
	hdrs  [batch]unix.Mmsghdr
	iovs  [batch]unix.Iovec
	bufs  [batch][readSize]byte
	names [batch]unix.RawSockaddrInet6
	oobs  [batch][64]byte
}

// newReadBatch points every header at its buffers.
func newReadBatch() *readBatch {
	b := &readBatch{}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(readSize)
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
	}
	b.reset()
	return b
}

// reset restores the lengths the kernel overwrote.
func (b *readBatch) reset() {
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(len(b.oobs[i]))
		h.Flags = 0
	}
}

// read is the reader goroutine of s: it drains the socket with recvmmsg
// whenever the poller says it is readable, until the socket is closed.
func (e *sharedEngine) read(s *engineSocket) {
	defer e.readers.Done()
	b := newReadBatch()
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
				uintptr(unsafe.Pointer(&b.hdrs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
			switch errno {
			case 0:
			case unix.EAGAIN:
				return false // wait for the poller
			case unix.EINTR:
				continue
			default:
				rerr = os.NewSyscallError("recvmmsg", errno)
				return true
			}
			now := time.Now()
			for i := range int(n) {
				h := &b.hdrs[i]
				e.deliver(s.v6, s.raw, b.bufs[i][:min(int(h.Len), readSize)],
					&b.names[i], b.oobs[i][:h.Hdr.Controllen], now)
			}
			b.reset()
		}
	})
	select {
	case <-e.done:
		return // closed by close: the read error only says so
	default:
	}
	if rerr == nil {
		rerr = err
	}
	if rerr != nil {
		// The probes in flight time out; the next Close or process restart
		// opens a fresh socket. This is not expected outside fd exhaustion.
		e.logger.Error("Shared ICMP socket reader stopped", "ipv6", s.v6, "err", rerr)
		e.mu.Lock()
		if e.socks[s.key] == s {
			delete(e.socks, s.key)
		}
		e.mu.Unlock()
		_ = s.f.Close()
	}
}

// deliver matches one received datagram to the probe waiting for it. now is
// when the batch was read, used when the kernel gave no timestamp.
func (e *sharedEngine) deliver(v6, raw bool, pkt []byte, name *unix.RawSockaddrInet6, oob []byte, now time.Time) {
	if raw && !v6 {
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			return
		}
		pkt = pkt[int(pkt[0]&0x0f)*4:]
	}
	if len(pkt) < 8+payloadHeader {
		return
	}
	want := byte(icmpv4EchoReply)
	if v6 {
		want = icmpv6EchoReply
	}
	if pkt[0] != want || pkt[1] != 0 {
		return
	}
	if raw && binary.BigEndian.Uint16(pkt[4:6]) != e.id {
		return
	}
	if binary.BigEndian.Uint32(pkt[8:12]) != e.cookie {
		return
	}
	seq := int(binary.BigEndian.Uint16(pkt[6:8]))
	token := binary.BigEndian.Uint32(pkt[12:16])
	src := source(v6, name)
	rx, stamped := rxTime(oob)

	e.pmu.Lock()
	defer e.pmu.Unlock()
	w := e.pending[token]
	if w == nil || seq >= w.sent || w.got[seq/64]&(1<<(seq%64)) != 0 {
		return // late, foreign or duplicate
	}
	if src != w.addr.Unmap().WithZone("") {
		return
	}
	w.got[seq/64] |= 1 << (seq % 64)
	sentAt := w.sendAt[seq]
	rtt := now.Sub(sentAt)
	if stamped {
		// The kernel stamp is wall-clock time; trust it unless the clock
		// stepped, in which case the monotonic reading is used.
		if k := time.Duration(rx - sentAt.UnixNano()); k > 0 && k <= rtt {
			rtt = k
		}
	}
	w.recv++
	w.rttSum += rtt
	if w.recv == w.count {
		select {
		case w.done <- struct{}{}:
		default:
		}
	}
}

// source returns the source address from a received msg_name.
func source(v6 bool, name *unix.RawSockaddrInet6) netip.Addr {
	if v6 {
		return netip.AddrFrom16(name.Addr)
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
	return netip.AddrFrom4(sa4.Addr)
}

// rxTime returns the SO_TIMESTAMPNS receive time in Unix nanoseconds
// from a control message buffer, if there is one.
func rxTime(oob []byte) (int64, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS &&
			l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Nano(), true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}
