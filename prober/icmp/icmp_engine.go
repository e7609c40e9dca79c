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
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fleet-exporter/fleet_exporter/probe"
)

// The shared ICMP engine.
//
// One socket per address family and source address serves every probe of a
// Prober: an unprivileged ping socket (SOCK_DGRAM, IPPROTO_ICMP[V6]) or one
// raw socket. Targets without a source address share the unbound socket of
// their family; a set with a source_address gets a socket bound to it.
// Sockets are opened on first use.
//
// A probe in flight is a record, not a goroutine: start registers a batch
// of probes under one lock and sends their first echo requests with
// sendmmsg; one reader goroutine per socket drains replies with recvmmsg
// and matches them, a batch at a time under the same lock, by the token the
// probe wrote into the payload; one loop goroutine per engine turns a
// timeout wheel every wheelTick, sending the later packets of multi-packet
// rounds and ending rounds whose time is up. Finished rounds are handed to
// their sink in batches (outcomeSink), never one callback per reply.
//
// Echo payload layout (network byte order), payloadHeader bytes:
//
//	[0:4]   engine cookie (random per engine; foreign replies never match)
//	[4:8]   probe token (unique among the probes in flight)
//	[8:16]  send time, Unix nanoseconds (for packet captures; RTTs use the
//	        probe's own record and the kernel's receive timestamp)
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
	// costs about 1 KiB of buffer (skb truesize) on loopback, so 32 MiB (the
	// kernel doubles it to 64 MiB) holds more than half a second of
	// replies at 100,000 per second while the reader is descheduled. It is
	// kernel memory, used only while replies wait.
	recvBuffer = 32 << 20
	// sendBuffer keeps sends from hitting EAGAIN during bursts.
	sendBuffer = 4 << 20
	// batch is how many datagrams one recvmmsg call may return.
	batch = 64
	// sendChunk is how many datagrams one sendmmsg call sends. Every packet
	// of a chunk is stamped with the time just before the call, so the
	// chunk is kept small enough that the stamp of its last packet is off
	// by tens of microseconds at most.
	sendChunk = 32
	// readSize is the receive buffer per datagram: the largest IPv4
	// header, the ICMP header and our payload header. Longer replies are
	// truncated by the kernel, which is fine: nothing past the header is
	// read.
	readSize = 60 + 8 + payloadHeader
	// wheelTick is the resolution of the timeout wheel: round timeouts
	// and the later packets of a round are late by at most about this.
	wheelTick = 10 * time.Millisecond
	// wheelSlots is the number of wheel slots (a power of two); deadlines
	// further out than wheelSlots ticks wait for more turns.
	wheelSlots = 1024
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
	// base is the origin of the engine's monotonic clock (mono).
	base time.Time
	// goroutines counts the running reader goroutines and the loop.
	goroutines sync.WaitGroup
	// done is closed by close to stop the goroutines.
	done chan struct{}
	// wake has capacity one: start signals it so an idle loop turns the
	// wheel again.
	wake chan struct{}

	// laneNext picks the lane to wait for when every lane is busy.
	laneNext atomic.Uint32

	// mu guards socks, closed and loopStarted.
	mu sync.Mutex
	// socks holds the sockets opened so far.
	socks       map[sockKey]*engineSocket
	closed      bool
	loopStarted bool

	// pmu guards pending, nextToken, free, wheel, groups and the mutable
	// fields of every flight (see flight).
	pmu       sync.Mutex
	pending   map[uint32]*flight
	nextToken uint32
	free      []*flight
	wheel     wheel
	// groups holds the group of every context with flights in flight, by
	// its Done channel.
	groups map[<-chan struct{}]*group
	// discarded counts our replies that matched no packet in flight, by
	// discardReason.
	discarded [discardReasons]uint64

	// lanes are the send paths: one per CPU the runtime uses, at most
	// four (sendLanes). Each has its own buffers and its own socket per
	// key, so that sends from the pool's dispatchers and the loop run in
	// parallel instead of queueing behind one socket lock in the kernel.
	lanes []*lane
}

// lane is one send path: its sendmmsg buffers, and the lane number its
// sockets are opened under (sockKey.lane).
type lane struct {
	mu  sync.Mutex // held for a whole send
	idx uint8
	snd sender
	// rcv is drain's read batch, allocated on first use.
	rcv *readBatch
}

// sendLanes is the number of send lanes of an engine.
func sendLanes() int {
	return min(max(runtime.GOMAXPROCS(0), 1), 4)
}

// sockKey names one shared socket: its family, the address it is bound
// to (the zero Addr for the kernel's choice) and its send lane. Rounds are
// registered on the lane 0 socket of their key; their packets go out on
// the socket of whichever lane sends them. A reply is matched by its token
// whichever socket reads it. Ping sockets each get their own ICMP ID from
// the kernel, so every lane's socket has a reader for its replies; a raw
// socket receives every echo reply of the host, so only lane 0's reads
// and the other lanes' raw sockets are send-only (they block every type).
type sockKey struct {
	v6   bool
	src  netip.Addr
	lane uint8
}

// engineSocket is one open shared socket.
type engineSocket struct {
	key sockKey
	f   *os.File
	rc  syscall.RawConn
	v6  bool
	// raw is true for raw sockets, whose IPv4 replies carry the IP header.
	raw bool
	// sendOnly marks a raw socket of a lane other than 0: it has no reader.
	sendOnly bool
	// sending counts the sends in progress whose replies come to this
	// socket; its reader leaves them to the senders' drain meanwhile.
	sending atomic.Int32
}

// flight is one round in flight. It is recycled once finished; gen tells a
// stale wheel entry from the flight's current round.
type flight struct {
	// Written by start before the flight is registered, then read-only:
	req      probe.Request
	sock     *engineSocket
	addr     netip.Addr // as given, for the outcome
	match    netip.Addr // unmapped and without zone, to check sources
	sa       unix.RawSockaddrInet6
	salen    uint32
	count    int
	interval int64 // nanoseconds
	deadline int64 // mono nanoseconds
	size     int   // ICMP message length
	sink     outcomeSink
	group    *group

	// Guarded by sharedEngine.pmu:
	token    uint32
	gen      uint32
	finished bool
	sent     int      // packets handed to the kernel, or about to be
	sendAt   []int64  // Unix nanoseconds per sequence number
	got      []uint64 // bitmap of sequence numbers answered
	recv     int
	rttSum   time.Duration
	err      error
	ctxErr   error
}

// group is the flights in flight whose contexts share one Done channel
// (the pool's run context, for every batch); it ends them when that
// context ends. Its flights are found by scanning pending then, so that
// registering a flight costs a counter, not a list entry.
type group struct {
	ctx  context.Context
	done <-chan struct{}
	// Guarded by sharedEngine.pmu:
	stop func() bool
	left int
}

// Reasons a reply carrying our cookie is discarded.
const (
	// discardDuplicate is a second reply to a packet of a round in flight.
	discardDuplicate = iota
	// discardLate is a reply to a round that is no longer in flight.
	discardLate
	// discardMismatched is a reply with the token of a round in flight but
	// from another address, or to a sequence number not sent.
	discardMismatched
	discardReasons
)

// discardNames are the reason label values of discardDuplicate and on.
var discardNames = [discardReasons]string{"duplicate", "late", "mismatched"}

// discardedReplies returns the discarded reply counts by reason.
func (e *sharedEngine) discardedReplies() [discardReasons]uint64 {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	return e.discarded
}

// newEngine returns an engine for the given socket mode. It opens no
// socket and starts no goroutine: the first probe of each address family
// does that.
func newEngine(mode Mode, logger *slog.Logger) *sharedEngine {
	lanes := make([]*lane, sendLanes())
	for i := range lanes {
		lanes[i] = &lane{idx: uint8(i)}
	}
	return &sharedEngine{
		lanes:      lanes,
		privileged: mode == ModePrivileged,
		logger:     logger,
		id:         uint16(rand.Uint32()),
		cookie:     rand.Uint32(),
		base:       time.Now(),
		done:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		socks:      make(map[sockKey]*engineSocket),
		pending:    make(map[uint32]*flight),
		groups:     make(map[<-chan struct{}]*group),
		nextToken:  rand.Uint32(),
		wheel:      newWheel(),
	}
}

// mono returns t on the engine's monotonic clock, in nanoseconds.
func (e *sharedEngine) mono(t time.Time) int64 { return int64(t.Sub(e.base)) }

// close closes the sockets, stops the goroutines and finishes every round
// in flight with errClosed. It is safe to call more than once.
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
	e.goroutines.Wait()
	var out outcomes
	e.pmu.Lock()
	now := time.Now()
	for _, f := range e.pending {
		f.err = errClosed
		e.finish(f, now, &out)
	}
	e.pmu.Unlock()
	out.flush()
}

// socket returns the shared socket of k, opening it and starting its
// reader (and the engine's loop) on first use. A socket the kernel refuses
// is errEngineUnavailable; a source address it cannot bind is not, since
// pro-bing could not send from it either, and nothing is kept: the next
// probe tries again, so a source address that comes back (an interface up
// again) is used.
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
	if !s.sendOnly {
		e.goroutines.Add(1)
		go e.read(s)
	}
	if !e.loopStarted {
		e.loopStarted = true
		e.goroutines.Add(1)
		go e.loop()
	}
	e.logger.Debug("Opened shared ICMP socket", "ipv6", k.v6, "source", k.src, "lane", k.lane, "privileged", e.privileged)
	return s, nil
}

// drop forgets s if it is still the socket of its key and closes it, so
// that the next round opens a fresh one.
func (e *sharedEngine) drop(s *engineSocket) {
	e.mu.Lock()
	if e.socks[s.key] == s {
		delete(e.socks, s.key)
	}
	e.mu.Unlock()
	_ = s.f.Close()
}

// sockKeyFor returns the socket key of round r, or an error when its
// source and target are of different families.
func sockKeyFor(r roundSpec) (sockKey, error) {
	v6 := !r.addr.Is4() && !r.addr.Is4In6()
	k := sockKey{v6: v6}
	if r.src.IsValid() {
		if srcV6 := !r.src.Is4() && !r.src.Is4In6(); srcV6 != v6 {
			return k, fmt.Errorf("icmp: source address %s and target address %s are of different families", r.src, r.addr)
		}
		k.src = r.src
		if !v6 {
			k.src = r.src.Unmap()
		}
	}
	return k, nil
}

// start begins one round per spec without waiting for it: every round is
// registered, its first echo request sent, and its outcome later handed to
// sink. Rounds whose socket cannot be opened are returned instead and get
// no outcome; a round whose source and target families differ is finished
// at once with that error. When ctx ends, the rounds still in flight end.
func (e *sharedEngine) start(ctx context.Context, specs []startSpec, sink outcomeSink) []rejected {
	var rej []rejected
	var out outcomes
	now := time.Now()
	nowMono, nowWall := e.mono(now), now.UnixNano()

	// Sockets first: opening one takes e.mu, never under pmu.
	kp := sockPool.Get().(*[]*engineSocket)
	socks := slices.Grow((*kp)[:0], len(specs))[:len(specs)]
	defer func() {
		clear(socks)
		*kp = socks[:0]
		sockPool.Put(kp)
	}()
	var lastKey sockKey
	var last *engineSocket
	for i := range specs {
		k, err := sockKeyFor(specs[i].round)
		if err != nil {
			out.add(sink, outcome{req: specs[i].req, addr: specs[i].round.addr, err: err, end: now})
			continue
		}
		if last == nil || k != lastKey {
			s, err := e.socket(k)
			if err != nil {
				rej = append(rej, rejected{spec: specs[i], err: err})
				continue
			}
			last, lastKey = s, k
		}
		socks[i] = last
	}

	sp := sendPool.Get().(*[]sendItem)
	sends := (*sp)[:0]
	defer func() {
		clear(sends)
		*sp = sends[:0]
		sendPool.Put(sp)
	}()
	e.pmu.Lock()
	var g *group
	if done := ctx.Done(); done != nil {
		if g = e.groups[done]; g == nil {
			g = &group{ctx: ctx, done: done}
			e.groups[done] = g
		}
	}
	idle := len(e.pending) == 0
	for i := range specs {
		s := socks[i]
		if s == nil {
			continue
		}
		f := e.newFlight(&specs[i], s, sink, nowMono)
		if f.deadline <= nowMono || ctx.Err() != nil {
			f.ctxErr = ctx.Err()
			e.finish(f, now, &out)
			continue
		}
		f.group = g
		if g != nil {
			g.left++
		}
		e.wheel.add(wheelEntry{f: f, gen: f.gen, at: f.deadline})
		sends = append(sends, e.prepareSend(f, nowWall, nowMono))
	}
	switch {
	case g == nil:
	case g.left == 0:
		delete(e.groups, g.done)
	case g.stop == nil:
		// Under pmu, so no flight of g can finish before stop is set; an
		// ended ctx runs cancel on another goroutine, which waits for pmu.
		g.stop = context.AfterFunc(ctx, func() { e.cancel(g) })
	}
	e.pmu.Unlock()
	if idle && len(sends) > 0 {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	e.send(sends, &out)
	out.flush()
	return rej
}

// sockPool recycles start's per-spec socket lists.
var sockPool = sync.Pool{New: func() any { s := make([]*engineSocket, 0, 64); return &s }}

// newFlight takes a flight from the free list and fills it for spec.
// Callers hold pmu.
func (e *sharedEngine) newFlight(spec *startSpec, s *engineSocket, sink outcomeSink, nowMono int64) *flight {
	var f *flight
	if n := len(e.free); n > 0 {
		f = e.free[n-1]
		e.free[n-1] = nil
		e.free = e.free[:n-1]
	} else {
		f = &flight{}
	}
	r := &spec.round
	f.req, f.sock, f.sink, f.group = spec.req, s, sink, nil
	f.addr = r.addr
	f.match = r.addr.Unmap().WithZone("")
	f.count = max(r.count, 1)
	f.interval = int64(r.interval)
	f.deadline = nowMono + int64(r.timeout)
	if !spec.req.Start.IsZero() {
		f.deadline = min(f.deadline, e.mono(spec.req.Start)+int64(r.timeout))
	}
	f.size = 8 + max(r.size, payloadHeader)
	f.sa = unix.RawSockaddrInet6{}
	if s.v6 {
		f.sa.Family = unix.AF_INET6
		f.sa.Addr = r.addr.As16()
		f.sa.Scope_id = zoneID(r.addr.Zone())
		f.salen = unix.SizeofSockaddrInet6
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&f.sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = r.addr.Unmap().As4()
		f.salen = unix.SizeofSockaddrInet4
	}
	f.sendAt = slicesResize(f.sendAt, f.count)
	f.got = slicesResize(f.got, (f.count+63)/64)
	clear(f.got)
	f.sent, f.recv, f.rttSum, f.err, f.ctxErr, f.finished = 0, 0, 0, nil, nil, false
	for {
		e.nextToken++
		if _, busy := e.pending[e.nextToken]; !busy {
			break
		}
	}
	f.token = e.nextToken
	e.pending[f.token] = f
	return f
}

// sendItem is one echo request to send. It copies what the send needs
// from its flight under pmu, so the send reads no flight field: a round may
// end (and its flight be reused) before its packet is out.
type sendItem struct {
	f     *flight
	gen   uint32
	seq   int
	token uint32
	size  int
	sock  *engineSocket
	salen uint32
	sa    unix.RawSockaddrInet6
	addr  netip.Addr
}

// prepareSend records packet f.sent of f as sent at nowWall (before the
// syscall, so that a reply read at once finds it) and schedules the next
// packet of the round on the wheel. Callers hold pmu.
func (e *sharedEngine) prepareSend(f *flight, nowWall, nowMono int64) sendItem {
	seq := f.sent
	f.sendAt[seq] = nowWall
	f.sent++
	if f.sent < f.count {
		if next := nowMono + f.interval; next < f.deadline {
			e.wheel.add(wheelEntry{f: f, gen: f.gen, at: next, send: true})
		}
	}
	return sendItem{
		f: f, gen: f.gen, seq: seq, token: f.token, size: f.size,
		sock: f.sock, salen: f.salen, sa: f.sa, addr: f.addr,
	}
}

// cancel ends the rounds of g still in flight: their context ended.
func (e *sharedEngine) cancel(g *group) {
	var out outcomes
	e.pmu.Lock()
	now := time.Now()
	for _, f := range e.pending {
		if f.group == g && !f.finished {
			f.ctxErr = g.ctx.Err()
			e.finish(f, now, &out)
		}
	}
	if e.groups[g.done] == g {
		delete(e.groups, g.done)
	}
	e.pmu.Unlock()
	out.flush()
}

// finish ends f's round: it leaves pending, its outcome goes to out and the
// flight back to the free list. Callers hold pmu.
func (e *sharedEngine) finish(f *flight, now time.Time, out *outcomes) {
	if f.finished {
		return
	}
	f.finished = true
	delete(e.pending, f.token)
	out.add(f.sink, outcome{
		req: f.req, addr: f.addr,
		st:  stats{sent: f.sent, recv: f.recv, rttSum: f.rttSum},
		err: f.err, ctxErr: f.ctxErr, end: now,
	})
	if g := f.group; g != nil {
		g.left--
		if g.left == 0 {
			if g.stop != nil {
				g.stop()
			}
			if e.groups[g.done] == g {
				delete(e.groups, g.done)
			}
		}
	}
	f.gen++
	f.req, f.sink, f.group, f.sock, f.err, f.ctxErr = probe.Request{}, nil, nil, nil, nil, nil
	e.free = append(e.free, f)
}

// outcomes collects finished rounds, grouped by sink, to hand them over
// after the lock is released.
type outcomes struct {
	sinks []outcomeSink
	lists [][]outcome
}

func (o *outcomes) add(sink outcomeSink, oc outcome) {
	n := len(o.sinks)
	if n == 0 || o.sinks[n-1] != sink {
		o.sinks = append(o.sinks, sink)
		o.lists = append(o.lists, (*outcomePool.Get().(*[]outcome))[:0])
		n++
	}
	o.lists[n-1] = append(o.lists[n-1], oc)
}

// flush hands every collected outcome to its sink and empties o. A sink's
// done must not keep the slice: it goes back to outcomePool.
func (o *outcomes) flush() {
	for i, s := range o.sinks {
		s.done(o.lists[i])
		l := o.lists[i]
		clear(l)
		l = l[:0]
		outcomePool.Put(&l)
		o.sinks[i], o.lists[i] = nil, nil
	}
	o.sinks, o.lists = o.sinks[:0], o.lists[:0]
}

// outcomePool and sendPool recycle the per-call slices of finished rounds
// and of packets to send: at 100,000 rounds a second they were most of
// the engine's garbage.
var (
	outcomePool = sync.Pool{New: func() any { s := make([]outcome, 0, 64); return &s }}
	sendPool    = sync.Pool{New: func() any { s := make([]sendItem, 0, 64); return &s }}
)

// sender is the one set of sendmmsg buffers.
type sender struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs []byte
}

// send hands items to the kernel, sendChunk at a time, per socket. A send
// error of one packet fails its round; a full socket buffer leaves the
// packet unsent (the round then counts one packet less); a closed socket
// fails the rounds on it, and the socket is dropped so that the next round
// opens a fresh one.
func (e *sharedEngine) send(items []sendItem, out *outcomes) {
	if len(items) == 0 {
		return
	}
	l := e.takeLane()
	defer l.mu.Unlock()
	for len(items) > 0 {
		s := items[0].sock
		n := 1
		for n < len(items) && n < sendChunk && items[n].sock == s {
			n++
		}
		ls := e.laneSocket(l, s)
		// The replies come to ls, or for a send-only raw socket to s.
		rs := ls
		if ls.sendOnly {
			rs = s
		}
		rs.sending.Add(1)
		e.sendChunk(ls, l, items[:n], out)
		rs.sending.Add(-1)
		e.drain(rs, l, out)
		items = items[n:]
	}
}

// takeLane locks and returns the first free lane, lane 0 first so that a
// light load keeps to one socket, or waits for the lane after the last
// one taken when all are busy.
func (e *sharedEngine) takeLane() *lane {
	for _, l := range e.lanes {
		if l.mu.TryLock() {
			return l
		}
	}
	l := e.lanes[int(e.laneNext.Add(1))%len(e.lanes)]
	l.mu.Lock()
	return l
}

// laneSocket returns the socket of l for rounds registered on s (a lane 0
// socket), opening it on first use. When it cannot be opened the packets
// go out on s.
func (e *sharedEngine) laneSocket(l *lane, s *engineSocket) *engineSocket {
	if l.idx == 0 {
		return s
	}
	k := s.key
	k.lane = l.idx
	ls, err := e.socket(k)
	if err != nil {
		return s
	}
	return ls
}

// sendChunk sends items, all for rounds on the same key, with sendmmsg on
// socket s of lane l. Callers hold l.mu.
func (e *sharedEngine) sendChunk(s *engineSocket, l *lane, items []sendItem, out *outcomes) {
	b := &l.snd
	total := 0
	for i := range items {
		total += items[i].size
	}
	if cap(b.bufs) < total {
		b.bufs = make([]byte, total)
	}
	b.bufs = b.bufs[:total]
	b.hdrs = slicesResize(b.hdrs, len(items))
	b.iovs = slicesResize(b.iovs, len(items))
	wall := uint64(time.Now().UnixNano())
	off := 0
	for i := range items {
		it := &items[i]
		p := b.bufs[off : off+it.size]
		off += it.size
		e.fillPacket(p, s, it.token, it.seq, wall)
		b.iovs[i].Base = &p[0]
		b.iovs[i].SetLen(len(p))
		h := &b.hdrs[i]
		*h = unix.Mmsghdr{}
		h.Hdr.Name = (*byte)(unsafe.Pointer(&it.sa))
		h.Hdr.Namelen = it.salen
		h.Hdr.Iov = &b.iovs[i]
		h.Hdr.SetIovlen(1)
	}
	var failed []int // indices whose send failed, with errs
	var errs []error
	closed := false
	for done := 0; done < len(items); {
		var n uintptr
		var errno syscall.Errno
		cerr := s.rc.Control(func(fd uintptr) {
			n, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, fd,
				uintptr(unsafe.Pointer(&b.hdrs[done])), uintptr(len(items)-done), unix.MSG_DONTWAIT, 0, 0)
		})
		if cerr != nil {
			closed = true
			for i := done; i < len(items); i++ {
				failed = append(failed, i)
				errs = append(errs, fmt.Errorf("%w: %w", errClosed, cerr))
			}
			break
		}
		if errno == 0 {
			done += int(n)
			continue
		}
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.ENOBUFS:
			// The socket buffer is full: the packet is not sent; its round
			// is judged by the packets that were.
			failed = append(failed, done)
			errs = append(errs, nil)
		default:
			// The first packet of the rest failed (sendmmsg reports an
			// error only when no packet went out).
			failed = append(failed, done)
			errs = append(errs, fmt.Errorf("icmp send to %s: %w", items[done].addr, os.NewSyscallError("sendmmsg", errno)))
			if errno == unix.EBADF || errno == unix.ENOTSOCK {
				closed = true
			}
		}
		done++
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Name, b.hdrs[i].Hdr.Iov = nil, nil
	}
	if len(failed) == 0 {
		return
	}
	e.pmu.Lock()
	now := time.Now()
	for j, i := range failed {
		it := items[i]
		f := it.f
		if f.gen != it.gen || f.finished {
			continue
		}
		if f.sent == it.seq+1 {
			f.sent = it.seq // not on the wire
		}
		if errs[j] != nil {
			f.err = errs[j]
			e.finish(f, now, out)
		} else if f.sent == 0 {
			f.err = fmt.Errorf("icmp send to %s: %w", it.addr, os.NewSyscallError("sendmmsg", unix.EAGAIN))
			e.finish(f, now, out)
		}
	}
	e.pmu.Unlock()
	if closed {
		e.drop(s)
	}
}

// fillPacket writes echo request seq of the flight with token into p.
func (e *sharedEngine) fillPacket(p []byte, s *engineSocket, token uint32, seq int, wall uint64) {
	clear(p[:8])
	p[0] = icmpv4EchoRequest
	if s.v6 {
		p[0] = icmpv6EchoRequest
	}
	binary.BigEndian.PutUint16(p[4:6], e.id)
	binary.BigEndian.PutUint16(p[6:8], uint16(seq))
	binary.BigEndian.PutUint32(p[8:12], e.cookie)
	binary.BigEndian.PutUint32(p[12:16], token)
	binary.BigEndian.PutUint64(p[16:24], wall)
	for i := 8 + payloadHeader; i < len(p); i++ {
		p[i] = byte(i)
	}
	if !s.v6 && s.raw {
		// Ping sockets and ICMPv6 raw sockets have the kernel checksum;
		// raw IPv4 sockets send what we give them.
		binary.BigEndian.PutUint16(p[2:4], checksum(p))
	}
}

// loop turns the wheel every wheelTick while rounds are in flight, and
// sleeps until start wakes it otherwise.
func (e *sharedEngine) loop() {
	defer e.goroutines.Done()
	ticker := time.NewTicker(wheelTick)
	defer ticker.Stop()
	var out outcomes
	var sends []sendItem
	for {
		select {
		case <-e.done:
			return
		case <-ticker.C:
		case <-e.wake:
		}
		now := time.Now()
		nowMono, nowWall := e.mono(now), now.UnixNano()
		e.pmu.Lock()
		e.wheel.advance(nowMono, func(w wheelEntry) {
			f := w.f
			if f.gen != w.gen || f.finished {
				return
			}
			if !w.send {
				e.finish(f, now, &out)
				return
			}
			if f.sent < f.count && w.at < f.deadline {
				sends = append(sends, e.prepareSend(f, nowWall, nowMono))
			}
		})
		idle := len(e.pending) == 0
		e.pmu.Unlock()
		e.send(sends, &out)
		clear(sends)
		sends = sends[:0]
		out.flush()
		if idle {
			ticker.Stop()
			select {
			case <-e.done:
				return
			case <-e.wake:
			}
			ticker.Reset(wheelTick)
		}
	}
}

// wheelEntry is one timed event: the end of a round, or (send) its next
// packet.
type wheelEntry struct {
	f    *flight
	gen  uint32
	send bool
	at   int64 // mono nanoseconds
}

// wheel is a hashed timing wheel of wheelSlots slots of wheelTick. Entries
// of finished rounds stay until their slot comes round and are skipped then
// (by generation), which is cheaper than removing them.
//
// A slot emptied by advance gives its array to spare, and add takes one from
// there for an empty slot: only the slots within the longest timeout hold
// entries at any time, and without this every slot would keep the array of
// its busiest turn (at 100,000 rounds a second, 1,024 arrays of about 1,000
// entries each, ten times the entries ever pending).
type wheel struct {
	slots [wheelSlots][]wheelEntry
	// cur is the next tick to process.
	cur int64
	// due is advance's scratch list.
	due []wheelEntry
	// spare holds the arrays of emptied slots, empty, for add to reuse.
	spare [][]wheelEntry
}

func newWheel() wheel { return wheel{} }

func (w *wheel) add(en wheelEntry) {
	t := max(en.at/int64(wheelTick), w.cur)
	s := &w.slots[t&(wheelSlots-1)]
	if cap(*s) == 0 {
		if n := len(w.spare); n > 0 {
			*s = w.spare[n-1]
			w.spare[n-1] = nil
			w.spare = w.spare[:n-1]
		}
	}
	*s = append(*s, en)
}

// advance processes every tick up to now (the wheel's clock starts at the
// engine's mono zero): entries due are handed to fn after their slot is
// scanned, so fn may add entries, even to that slot; entries of a later turn
// of the wheel stay.
func (w *wheel) advance(now int64, fn func(wheelEntry)) {
	end := now / int64(wheelTick)
	for w.cur <= end {
		tick := w.cur
		// Move on first: entries fn adds for now or the past go to the
		// next slot, which this or the next advance processes.
		w.cur++
		s := &w.slots[tick&(wheelSlots-1)]
		keep := (*s)[:0]
		due := w.due[:0]
		for _, en := range *s {
			if en.at/int64(wheelTick) > tick {
				keep = append(keep, en)
				continue
			}
			due = append(due, en)
		}
		clear((*s)[len(keep):])
		if len(keep) == 0 && cap(keep) > 0 {
			w.spare = append(w.spare, keep)
			keep = nil
		}
		*s = keep
		for _, en := range due {
			fn(en)
		}
		clear(due)
		w.due = due
	}
}

// ping runs one round and waits for it: r.count echo requests r.interval
// apart, until all replies have arrived, r.timeout has passed, ctx ends or
// the engine closes. The error is errEngineUnavailable (wrapped) when the
// socket cannot be opened and nothing was sent, a send error, or
// errClosed; the stats are valid in every case.
func (e *sharedEngine) ping(ctx context.Context, r roundSpec) (stats, error) {
	sink := &waitSink{c: make(chan outcome, 1)}
	rej := e.start(ctx, []startSpec{{round: r}}, sink)
	if len(rej) > 0 {
		return stats{}, rej[0].err
	}
	o := <-sink.c
	if o.err == nil && o.ctxErr == nil {
		select {
		case <-e.done:
			return o.st, errClosed
		default:
		}
	}
	return o.st, o.err
}

// waitSink hands the outcome of one round to a waiting goroutine.
type waitSink struct{ c chan outcome }

func (w *waitSink) done(o []outcome) {
	for _, oc := range o {
		w.c <- oc
	}
}

// read is the reader goroutine of s: it drains the socket with recvmmsg
// whenever the poller says it is readable and matches each batch under one
// lock, until the socket is closed. A read error other than the engine's
// close drops the socket; the next round opens a fresh one.
func (e *sharedEngine) read(s *engineSocket) {
	defer e.goroutines.Done()
	b := newReadBatch()
	var out outcomes
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			if s.sending.Load() > 0 {
				// A sender on s reads what it made arrive once it is
				// done (drain); reading now would take its replies a
				// few at a time.
				return false
			}
			switch _, errno := e.recv(fd, s, b, &out); errno {
			case 0:
				out.flush()
			case unix.EAGAIN:
				return false // wait for the poller
			default:
				rerr = os.NewSyscallError("recvmmsg", errno)
				return true
			}
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
	if rerr == nil {
		rerr = errors.New("socket closed")
	}
	// The rounds in flight on s lose their remaining replies and end at
	// their timeout; the next rounds open a fresh socket.
	e.logger.Error("Shared ICMP socket reader stopped; reopening the socket for the next probes", "ipv6", s.v6, "err", rerr)
	e.drop(s)
}

// recv reads one recvmmsg batch from fd, the descriptor of s, into b and
// delivers it into out under pmu. It returns the number of datagrams read
// and the call's error: EAGAIN when none was waiting. EINTR is retried.
func (e *sharedEngine) recv(fd uintptr, s *engineSocket, b *readBatch, out *outcomes) (int, syscall.Errno) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&b.hdrs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		now := time.Now()
		e.pmu.Lock()
		for i := range int(n) {
			h := &b.hdrs[i]
			e.deliver(s.v6, s.raw, b.bufs[i][:min(int(h.Len), readSize)],
				&b.names[i], b.oobs[i][:h.Hdr.Controllen], now, out)
		}
		e.pmu.Unlock()
		b.reset()
		return int(n), 0
	}
}

// drain reads what waits on s right after a send on lane l: on loopback
// and fast links the replies to a sendmmsg call are queued before it
// returns, and reading them here takes them in one call instead of waking
// the reader for a few at a time. It stops at the first short batch;
// anything arriving later wakes the reader. Errors are left to the reader.
// Callers hold l.mu.
func (e *sharedEngine) drain(s *engineSocket, l *lane, out *outcomes) {
	if s.sendOnly {
		return
	}
	if l.rcv == nil {
		l.rcv = newReadBatch()
	}
	_ = s.rc.Control(func(fd uintptr) {
		for {
			n, errno := e.recv(fd, s, l.rcv, out)
			if errno != 0 || n < batch {
				return
			}
		}
	})
}

// deliver matches one received datagram to the round waiting for it. now is
// when the batch was read, used when the kernel gave no timestamp. A round
// whose every reply is in is finished into out. Callers hold pmu.
func (e *sharedEngine) deliver(v6, raw bool, pkt []byte, name *unix.RawSockaddrInet6, oob []byte, now time.Time, out *outcomes) {
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

	f := e.pending[token]
	switch {
	case f == nil:
		// The round is over: timed out, or complete and this is a
		// duplicate that came after its end.
		e.discarded[discardLate]++
		return
	case seq >= f.sent || source(v6, name) != f.match:
		e.discarded[discardMismatched]++
		return
	case f.got[seq/64]&(1<<(seq%64)) != 0:
		e.discarded[discardDuplicate]++
		return
	}
	f.got[seq/64] |= 1 << (seq % 64)
	sentAt := f.sendAt[seq]
	nowWall := now.UnixNano()
	rtt := time.Duration(nowWall - sentAt)
	if rx, stamped := rxTime(oob); stamped {
		// The kernel stamp is wall-clock time; trust it unless the clock
		// stepped, in which case the read time is used.
		if k := time.Duration(rx - sentAt); k > 0 && k <= rtt {
			rtt = k
		}
	}
	rtt = max(rtt, 0)
	f.recv++
	f.rttSum += rtt
	if f.recv == f.count {
		e.finish(f, now, out)
	}
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
	sendOnly := e.privileged && k.lane > 0
	if err := setupSocket(fd, v6, e.privileged, sendOnly); err != nil {
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
	return &engineSocket{key: k, f: f, rc: rc, v6: v6, raw: e.privileged, sendOnly: sendOnly}, nil
}

// setupSocket applies the socket options the engine relies on. Only the
// filter is required; buffers and timestamps are best effort. A send-only
// raw socket blocks every ICMP type: lane 0's socket reads the replies.
func setupSocket(fd int, v6, raw, sendOnly bool) error {
	// SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN;
	// SO_RCVBUF is capped by rmem_max.
	if !sendOnly && unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
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
		if !sendOnly {
			f.Data[icmpv6EchoReply>>5] &^= 1 << (icmpv6EchoReply & 31) // ... but echo replies
		}
		if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return os.NewSyscallError("setsockopt ICMPV6_FILTER", err)
		}
		return nil
	}
	// ICMP_FILTER takes a bitmask of the types to drop.
	drop := ^int32(1 << icmpv4EchoReply)
	if sendOnly {
		drop = ^int32(0)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(drop)); err != nil {
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
