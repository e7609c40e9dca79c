package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"net/netip"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// The file is a fixed 32-byte header followed by the body:
//
//	offset  size  field
//	0       8     magic "FLEETSNP"
//	8       2     format version, big-endian (Version)
//	10      2     flags, big-endian; bit 0: written at clean shutdown
//	12      8     creation time, Unix nanoseconds, big-endian
//	20      8     body length in bytes, big-endian
//	28      4     CRC-32C (Castagnoli) of bytes 0-27 and of the body
//
// The body is hand-written binary rather than encoding/gob: its layout is
// spelled out here and does not change when a Go field is renamed or
// reordered, decoding needs no reflection, and it checks every length and
// index against what is left, so even a file that passes the checksum by
// accident cannot make the decoder allocate without bound. Integers are varints (zig-zag for signed
// ones), times are signed nanosecond offsets from the creation time, so the
// recent ones take 4-6 bytes; a certificate's expiry, which may lie
// beyond what nanoseconds since 1970 can hold, is Unix seconds and
// nanoseconds instead. Set, probe, reason and command names repeat
// across targets and are written once, in a string table, and referred to by
// index; host names are written in place.
//
//	body       = strings targets setprobes
//	strings    = count { len bytes }
//	targets    = count { set:ref host:string probe:ref port flags:byte
//	                     reason:ref duration consecutive_failures
//	                     [last_run] [last_success] [failing_since]
//	                     [icmp] [ssh] }
//	icmp       = packets_sent packets_received last_sent last_received rtt
//	ssh        = connect handshake auth count { name:ref flags:byte duration
//	                     exit_status reason:ref hash:8 bytes little-endian
//	                     output_bytes [hash_changed] } hostkey
//	hostkey    = flags:byte [type:ref fingerprint:string
//	                     [cert_expiry_seconds cert_expiry_nanos]
//	                     [changed previous:string]]   (version 3 on)
//	setprobes  = count { set:ref probe:ref targets successes failures }
//
// The CRC-32C detects what a torn write, a truncated copy or a flipped bit
// leaves behind, at memory speed (the CPU computes it in hardware). It does
// not defend against a deliberate edit: whoever can write the state
// directory can write a valid file.

const (
	// Version is the format version Marshal writes. Unmarshal reads files
	// of this version and of versions 1 and 2, and refuses newer ones.
	// Version 2 added the port to a target's key, version 3 the SSH host
	// key.
	Version = 3

	magic      = "FLEETSNP"
	headerSize = 32
	flagClean  = 1 << 0
)

// Target flags.
const (
	tHasResult = 1 << iota
	tSuccess
	tLastRun
	tLastSuccess
	tFailingSince
	tICMP
	tSSH
	tSSHPhases
)

// Command flags.
const (
	cRan = 1 << iota
	cOutputRead
	cHashChanged
)

// Host key flags.
const (
	kKnown = 1 << iota
	kCertificate
	kCertificateExpiry
	kChanged
)

// ErrCorrupt is wrapped by Unmarshal's error when the file is truncated,
// fails its checksum or does not decode.
var ErrCorrupt = errors.New("corrupt state snapshot")

// ErrVersion is wrapped by Unmarshal's error when the file was written by a
// newer format version than this binary reads.
var ErrVersion = errors.New("unsupported state snapshot version")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes one snapshot file.
type Header struct {
	// Version is the format version of the file.
	Version uint16
	// Clean is true for the snapshot written at clean shutdown, after the
	// last probe result arrived; the file then holds the exact counters
	// the process last exported.
	Clean bool
	// Created is when the snapshot was taken.
	Created time.Time
}

// Marshal encodes saved as a snapshot file of the current Version, created
// at h.Created; h.Version is ignored.
func Marshal(h Header, saved *collector.Saved) []byte {
	return marshal(h, saved, Version)
}

// marshal encodes saved in format version (1 to 3); tests write the older
// versions with it.
func marshal(h Header, saved *collector.Saved, version uint16) []byte {
	e := encoder{base: h.Created.UnixNano(), refs: map[string]uint64{}, version: version}
	// Roughly what a target takes, so the buffer grows once or twice.
	e.body = make([]byte, 0, 64*len(saved.Targets)+256)
	e.uvarint(uint64(len(saved.Targets)))
	for i := range saved.Targets {
		e.target(&saved.Targets[i])
	}
	e.uvarint(uint64(len(saved.SetProbes)))
	for _, sp := range saved.SetProbes {
		e.ref(sp.Set)
		e.ref(sp.Probe)
		e.uvarint(uint64(max(sp.Targets, 0)))
		e.uvarint(sp.Successes)
		e.uvarint(sp.Failures)
	}

	var table []byte
	table = binary.AppendUvarint(table, uint64(len(e.strs)))
	for _, s := range e.strs {
		table = binary.AppendUvarint(table, uint64(len(s)))
		table = append(table, s...)
	}

	out := make([]byte, headerSize, headerSize+len(table)+len(e.body))
	copy(out, magic)
	binary.BigEndian.PutUint16(out[8:], version)
	var flags uint16
	if h.Clean {
		flags |= flagClean
	}
	binary.BigEndian.PutUint16(out[10:], flags)
	binary.BigEndian.PutUint64(out[12:], uint64(e.base))
	binary.BigEndian.PutUint64(out[20:], uint64(len(table)+len(e.body)))
	out = append(out, table...)
	out = append(out, e.body...)
	crc := crc32.Update(crc32.Checksum(out[:28], castagnoli), castagnoli, out[headerSize:])
	binary.BigEndian.PutUint32(out[28:], crc)
	return out
}

type encoder struct {
	body    []byte
	base    int64
	version uint16
	// refs maps each string of the table to its index in strs.
	refs map[string]uint64
	strs []string
}

func (e *encoder) uvarint(v uint64) { e.body = binary.AppendUvarint(e.body, v) }
func (e *encoder) varint(v int64)   { e.body = binary.AppendVarint(e.body, v) }

func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.body = append(e.body, s...)
}

func (e *encoder) ref(s string) {
	i, ok := e.refs[s]
	if !ok {
		i = uint64(len(e.strs))
		e.refs[s] = i
		e.strs = append(e.strs, s)
	}
	e.uvarint(i)
}

func (e *encoder) time(t time.Time) { e.varint(t.UnixNano() - e.base) }

func (e *encoder) target(sv *collector.SavedTarget) {
	st := &sv.State
	var flags byte
	set := func(f byte, on bool) {
		if on {
			flags |= f
		}
	}
	set(tHasResult, st.HasResult)
	set(tSuccess, st.Success)
	set(tLastRun, !st.LastRun.IsZero())
	set(tLastSuccess, !st.LastSuccess.IsZero())
	set(tFailingSince, !st.FailingSince.IsZero())
	set(tICMP, st.ICMP != collector.ICMPState{})
	set(tSSH, st.SSH != nil)
	set(tSSHPhases, st.SSH != nil && st.SSH.HasPhases)

	e.ref(sv.Key.Set)
	e.str(sv.Key.Host)
	e.ref(sv.Key.Probe)
	if e.version >= 2 {
		e.uvarint(uint64(max(sv.Key.Port, 0)))
	}
	e.body = append(e.body, flags)
	e.ref(string(st.Reason))
	e.varint(int64(st.Duration))
	e.uvarint(uint64(max(st.ConsecutiveFailures, 0)))
	if flags&tLastRun != 0 {
		e.time(st.LastRun)
	}
	if flags&tLastSuccess != 0 {
		e.time(st.LastSuccess)
	}
	if flags&tFailingSince != 0 {
		e.time(st.FailingSince)
	}
	// The probed address, empty when none was recorded.
	if st.Addr.IsValid() {
		e.str(st.Addr.String())
	} else {
		e.str("")
	}
	if flags&tICMP != 0 {
		e.uvarint(st.ICMP.PacketsSent)
		e.uvarint(st.ICMP.PacketsReceived)
		e.varint(int64(st.ICMP.LastSent))
		e.varint(int64(st.ICMP.LastReceived))
		e.varint(int64(st.ICMP.RTT))
	}
	if flags&tSSH != 0 {
		ssh := st.SSH
		e.varint(int64(ssh.Connect))
		e.varint(int64(ssh.Handshake))
		e.varint(int64(ssh.Auth))
		e.uvarint(uint64(len(ssh.Commands)))
		for i := range ssh.Commands {
			c := &ssh.Commands[i]
			var cf byte
			if c.Ran {
				cf |= cRan
			}
			if c.OutputRead {
				cf |= cOutputRead
			}
			if !c.HashChanged.IsZero() {
				cf |= cHashChanged
			}
			e.ref(c.Name)
			e.body = append(e.body, cf)
			e.varint(int64(c.Duration))
			e.varint(int64(c.ExitStatus))
			e.ref(string(c.Reason))
			e.body = binary.LittleEndian.AppendUint64(e.body, c.Hash)
			e.varint(c.Bytes)
			if cf&cHashChanged != 0 {
				e.time(c.HashChanged)
			}
		}
		if e.version >= 3 {
			e.hostKey(ssh.HostKey)
		}
	}
}

func (e *encoder) hostKey(k *collector.HostKeyState) {
	if k == nil {
		e.body = append(e.body, 0)
		return
	}
	flags := byte(kKnown)
	if k.Certificate {
		flags |= kCertificate
	}
	if !k.CertificateExpiry.IsZero() {
		flags |= kCertificateExpiry
	}
	if !k.Changed.IsZero() {
		flags |= kChanged
	}
	e.body = append(e.body, flags)
	e.ref(k.Type)
	e.str(k.FingerprintSHA256)
	if flags&kCertificateExpiry != 0 {
		e.varint(k.CertificateExpiry.Unix())
		e.uvarint(uint64(k.CertificateExpiry.Nanosecond()))
	}
	if flags&kChanged != 0 {
		e.time(k.Changed)
		e.str(k.Previous)
	}
}

// Unmarshal decodes a snapshot file. Its error wraps ErrCorrupt or
// ErrVersion and says what is wrong.
func Unmarshal(data []byte) (Header, *collector.Saved, error) {
	var h Header
	if len(data) < headerSize {
		return h, nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(data), headerSize)
	}
	if string(data[:8]) != magic {
		return h, nil, fmt.Errorf("%w: bad magic %q", ErrCorrupt, data[:8])
	}
	h.Version = binary.BigEndian.Uint16(data[8:])
	if h.Version == 0 {
		return h, nil, fmt.Errorf("%w: version 0", ErrCorrupt)
	}
	if h.Version > Version {
		return h, nil, fmt.Errorf("%w: file has version %d, this binary reads up to %d", ErrVersion, h.Version, Version)
	}
	flags := binary.BigEndian.Uint16(data[10:])
	h.Clean = flags&flagClean != 0
	base := int64(binary.BigEndian.Uint64(data[12:]))
	h.Created = time.Unix(0, base)
	n := binary.BigEndian.Uint64(data[20:])
	if have := uint64(len(data) - headerSize); n != have {
		return h, nil, fmt.Errorf("%w: header says %d body bytes, file has %d", ErrCorrupt, n, have)
	}
	body := data[headerSize:]
	if crc := crc32.Update(crc32.Checksum(data[:28], castagnoli), castagnoli, body); crc != binary.BigEndian.Uint32(data[28:]) {
		return h, nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if flags&^flagClean != 0 {
		return h, nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}

	d := decoder{data: body, base: base, version: h.Version}
	saved := d.saved()
	if d.err == nil && d.off != len(d.data) {
		d.fail("%d bytes after the end", len(d.data)-d.off)
	}
	if d.err != nil {
		return h, nil, d.err
	}
	return h, saved, nil
}

// decoder reads the body; the first error sticks and every later read
// returns zero values.
type decoder struct {
	data []byte
	off  int
	base int64
	// version is the file's format version.
	version uint16
	strs    []string
	err     error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at body offset %d: %s", ErrCorrupt, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

// int reads a signed varint that must fit an int.
func (d *decoder) int() int {
	v := d.varint()
	if v < math.MinInt || v > math.MaxInt {
		d.fail("integer %d out of range", v)
		return 0
	}
	return int(v)
}

// count reads an element count; every element takes at least one byte, so
// a count beyond the bytes left is corrupt, and checking it first bounds
// what the caller allocates.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.data)-d.off) {
		d.fail("count %d exceeds the %d bytes left", v, len(d.data)-d.off)
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.data) {
		d.fail("unexpected end")
		return 0
	}
	b := d.data[d.off]
	d.off++
	return b
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.data)-d.off {
		d.fail("unexpected end")
		return nil
	}
	b := d.data[d.off : d.off+n]
	d.off += n
	return b
}

func (d *decoder) str() string { return string(d.bytes(d.count())) }

func (d *decoder) ref() string {
	i := d.uvarint()
	if d.err != nil {
		return ""
	}
	if i >= uint64(len(d.strs)) {
		d.fail("string reference %d beyond the table of %d", i, len(d.strs))
		return ""
	}
	return d.strs[i]
}

func (d *decoder) time() time.Time {
	v := d.varint()
	return time.Unix(0, d.base+v)
}

func (d *decoder) saved() *collector.Saved {
	n := d.count()
	d.strs = make([]string, 0, n)
	for range n {
		d.strs = append(d.strs, d.str())
	}
	saved := &collector.Saved{}
	n = d.count()
	saved.Targets = make([]collector.SavedTarget, n)
	for i := 0; i < n && d.err == nil; i++ {
		d.target(&saved.Targets[i])
	}
	n = d.count()
	saved.SetProbes = make([]collector.SetProbeState, n)
	for i := 0; i < n && d.err == nil; i++ {
		sp := &saved.SetProbes[i]
		sp.Set, sp.Probe = d.ref(), d.ref()
		targets := d.uvarint()
		if targets > math.MaxInt32 {
			d.fail("target count %d out of range", targets)
		}
		sp.Targets = int(targets)
		sp.Successes, sp.Failures = d.uvarint(), d.uvarint()
	}
	if d.err != nil {
		return nil
	}
	return saved
}

func (d *decoder) target(sv *collector.SavedTarget) {
	sv.Key = config.Key{Set: d.ref(), Host: d.str(), Probe: d.ref()}
	if d.version >= 2 {
		// Version 1 had no port: its TCP keys restore through the store's
		// match of a host's only TCP target.
		port := d.uvarint()
		if port > config.MaxPort {
			d.fail("port %d out of range", port)
		}
		sv.Key.Port = int(port)
	}
	st := &sv.State
	flags := d.byte()
	st.HasResult = flags&tHasResult != 0
	st.Success = flags&tSuccess != 0
	st.Reason = probe.Reason(d.ref())
	st.Duration = time.Duration(d.varint())
	failures := d.uvarint()
	if failures > math.MaxInt32 {
		d.fail("consecutive failures %d out of range", failures)
	}
	st.ConsecutiveFailures = int(failures)
	if flags&tLastRun != 0 {
		st.LastRun = d.time()
	}
	if flags&tLastSuccess != 0 {
		st.LastSuccess = d.time()
	}
	if flags&tFailingSince != 0 {
		st.FailingSince = d.time()
	}
	if a := d.str(); a != "" {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			d.fail("probed address %q: %v", a, err)
		}
		st.Addr = addr
	}
	if flags&tICMP != 0 {
		st.ICMP.PacketsSent = d.uvarint()
		st.ICMP.PacketsReceived = d.uvarint()
		st.ICMP.LastSent = d.int()
		st.ICMP.LastReceived = d.int()
		st.ICMP.RTT = time.Duration(d.varint())
	}
	if flags&tSSH == 0 {
		if flags&tSSHPhases != 0 {
			d.fail("SSH phases flag without SSH state")
		}
		return
	}
	ssh := &collector.SSHState{HasPhases: flags&tSSHPhases != 0}
	ssh.Connect = time.Duration(d.varint())
	ssh.Handshake = time.Duration(d.varint())
	ssh.Auth = time.Duration(d.varint())
	if n := d.count(); n > 0 {
		ssh.Commands = make([]collector.CommandState, n)
		for i := 0; i < n && d.err == nil; i++ {
			c := &ssh.Commands[i]
			c.Name = d.ref()
			cf := d.byte()
			if cf&^(cRan|cOutputRead|cHashChanged) != 0 {
				d.fail("unknown command flags %#x", cf)
			}
			c.Ran = cf&cRan != 0
			c.OutputRead = cf&cOutputRead != 0
			c.Duration = time.Duration(d.varint())
			c.ExitStatus = d.int()
			c.Reason = probe.Reason(d.ref())
			if b := d.bytes(8); b != nil {
				c.Hash = binary.LittleEndian.Uint64(b)
			}
			c.Bytes = d.varint()
			if cf&cHashChanged != 0 {
				c.HashChanged = d.time()
			}
		}
	}
	if d.version >= 3 {
		ssh.HostKey = d.hostKey()
	}
	st.SSH = ssh
}

// hostKey reads a host key state; nil when none was saved.
func (d *decoder) hostKey() *collector.HostKeyState {
	flags := d.byte()
	if flags&^(kKnown|kCertificate|kCertificateExpiry|kChanged) != 0 {
		d.fail("unknown host key flags %#x", flags)
	}
	if flags&kKnown == 0 {
		if flags != 0 {
			d.fail("host key flags %#x without a key", flags)
		}
		return nil
	}
	k := &collector.HostKeyState{Type: d.ref(), FingerprintSHA256: d.str(), Certificate: flags&kCertificate != 0}
	if k.FingerprintSHA256 == "" {
		d.fail("host key without a fingerprint")
	}
	if flags&kCertificateExpiry != 0 {
		sec, nsec := d.varint(), d.uvarint()
		if nsec >= 1e9 {
			d.fail("certificate expiry nanoseconds %d out of range", nsec)
		}
		k.CertificateExpiry = time.Unix(sec, int64(nsec))
	}
	if flags&kChanged != 0 {
		k.Changed = d.time()
		k.Previous = d.str()
	}
	return k
}
