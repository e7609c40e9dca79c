package netnstest

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// echoResponder answers the IPv4 ICMP echo requests routed to its TUN
// device after a fixed delay, like a host at the end of a slow link. It
// answers every address; everything else that arrives is ignored.
type echoResponder struct {
	f     *os.File
	delay time.Duration
	// answered counts the replies written back to the device.
	answered atomic.Int64
	queue    chan delayedPacket
	stop     chan struct{}
	wg       sync.WaitGroup
}

// delayedPacket is a reply waiting for its time.
type delayedPacket struct {
	due time.Time
	pkt []byte
}

// startEchoResponder creates the TUN device name in the namespace of the
// calling thread and starts answering on it. The caller brings the device
// up and routes addresses to it; close stops the responder and removes the
// device.
func startEchoResponder(name string, delay time.Duration) (*echoResponder, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	// IFF_NO_PI: every read and write is exactly one bare IP packet.
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	// A non-blocking descriptor makes os.File use the runtime poller, so
	// close unblocks a pending Read.
	r := &echoResponder{
		f:     os.NewFile(uintptr(fd), "/dev/net/tun"),
		delay: delay,
		queue: make(chan delayedPacket, 1024),
		stop:  make(chan struct{}),
	}
	r.wg.Add(2)
	go r.read()
	go r.write()
	return r, nil
}

// close stops both goroutines and closes the device; the kernel removes a
// non-persistent TUN interface with its last descriptor.
func (r *echoResponder) close() {
	close(r.stop)
	_ = r.f.Close()
	r.wg.Wait()
}

// read turns every echo request into a reply queued for its due time.
func (r *echoResponder) read() {
	defer r.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := r.f.Read(buf)
		if err != nil {
			return
		}
		reply, ok := echoReply(buf[:n])
		if !ok {
			continue
		}
		select {
		case r.queue <- delayedPacket{due: time.Now().Add(r.delay), pkt: reply}:
		case <-r.stop:
			return
		}
	}
}

// write sends each queued reply once it is due. The delay is the same for
// every packet, so the queue is in due order.
func (r *echoResponder) write() {
	defer r.wg.Done()
	for {
		var p delayedPacket
		select {
		case <-r.stop:
			return
		case p = <-r.queue:
		}
		if wait := time.Until(p.due); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-r.stop:
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		if _, err := r.f.Write(p.pkt); err == nil {
			r.answered.Add(1)
		}
	}
}

// ICMP types handled by echoReply.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
)

// echoReply returns the IPv4 ICMP echo reply to pkt, or false when pkt is
// not a well-formed, unfragmented IPv4 ICMP echo request. The reply keeps
// the identifier, sequence number and payload, swaps the addresses and
// carries fresh checksums.
func echoReply(pkt []byte) ([]byte, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	const protoICMP = 1
	switch {
	case ihl < 20, total < ihl+8, total > len(pkt):
		return nil, false
	case pkt[9] != protoICMP:
		return nil, false
	case binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0: // MF flag or offset
		return nil, false
	case pkt[ihl] != icmpEchoRequest || pkt[ihl+1] != 0:
		return nil, false
	case checksum(pkt[:ihl]) != 0 || checksum(pkt[ihl:total]) != 0:
		return nil, false
	}
	reply := make([]byte, total)
	copy(reply, pkt[:total])
	copy(reply[12:16], pkt[16:20])
	copy(reply[16:20], pkt[12:16])
	reply[8] = 64 // TTL
	reply[10], reply[11] = 0, 0
	binary.BigEndian.PutUint16(reply[10:12], checksum(reply[:ihl]))
	icmp := reply[ihl:]
	icmp[0] = icmpEchoReply
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return reply, true
}

// checksum is the Internet checksum (RFC 1071) of b. Over data that
// includes a correct checksum field it is zero.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
