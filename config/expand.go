package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxRangeDigits bounds a range bound's digits so that it fits a uint64.
const maxRangeDigits = 18

// numRange is one "[lo-hi]" numeric range of a host entry.
type numRange struct {
	lo, hi uint64
	// width is the zero-padded width, 0 when the start had no leading zero.
	width int
}

// hostEntry is one parsed host entry: a CIDR block, or a template of literal
// text and numeric ranges (a plain host is a template without ranges).
type hostEntry struct {
	raw    string
	prefix netip.Prefix // valid for a CIDR block
	lits   []string     // len(lits) == len(ranges)+1 for a template
	ranges []numRange
	// count is the number of hosts the entry expands to, saturated at
	// math.MaxUint64. It is known before anything is expanded.
	count uint64
}

// hostAddr is one expanded host.
type hostAddr struct {
	host string // the `host` label
	name string // DNS name or IP literal, without port or brackets
	port int    // 0 when the entry gave none
}

// parseEntry parses a host entry and counts its expansion without
// enumerating it.
func parseEntry(raw string) (*hostEntry, error) {
	e := &hostEntry{raw: raw, count: 1}
	if raw == "" {
		return nil, errors.New("empty host entry")
	}
	if strings.Contains(raw, "/") {
		p, err := netip.ParsePrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %q is not a valid CIDR block", raw)
		}
		if m := p.Masked(); m != p {
			return nil, fmt.Errorf("entry %q has host bits set: did you mean %q?", raw, m.String())
		}
		e.prefix = p
		hostBits := p.Addr().BitLen() - p.Bits()
		switch {
		case hostBits >= 64:
			e.count = math.MaxUint64
		case p.Addr().Is4() && hostBits >= 2:
			// Skip the network and broadcast addresses; /31 and /32 have none.
			e.count = 1<<hostBits - 2
		default:
			e.count = 1 << hostBits
		}
		return e, nil
	}

	last := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] != '[' {
			continue
		}
		j := strings.IndexByte(raw[i:], ']')
		if j < 0 {
			return nil, fmt.Errorf("entry %q has an unclosed '['", raw)
		}
		inner := raw[i+1 : i+j]
		if i == 0 && (strings.Contains(inner, ":") || !strings.Contains(inner, "-")) {
			// "[v6]" or "[v6]:port": parsed (and refused if need be) by
			// parseHost.
			i += j
			continue
		}
		r, err := parseRange(inner)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", raw, err)
		}
		e.lits = append(e.lits, raw[last:i])
		e.ranges = append(e.ranges, r)
		hi, lo := bits.Mul64(e.count, r.hi-r.lo+1)
		if hi != 0 {
			e.count = math.MaxUint64
		} else {
			e.count = lo
		}
		i += j
		last = i + 1
	}
	e.lits = append(e.lits, raw[last:])
	if len(e.ranges) == 0 {
		// Check a plain host now, so that parse errors name it directly.
		if _, err := parseHost(raw); err != nil {
			return nil, fmt.Errorf("entry %q: %w", raw, err)
		}
	}
	return e, nil
}

// parseRange parses the inside of "[lo-hi]".
func parseRange(s string) (numRange, error) {
	loS, hiS, ok := strings.Cut(s, "-")
	if !ok || !isDigits(loS) || !isDigits(hiS) {
		return numRange{}, fmt.Errorf("invalid range [%s]: want [start-end] with decimal numbers, e.g. [01-20]", s)
	}
	if len(loS) > maxRangeDigits || len(hiS) > maxRangeDigits {
		return numRange{}, fmt.Errorf("invalid range [%s]: bounds have more than %d digits", s, maxRangeDigits)
	}
	lo, _ := strconv.ParseUint(loS, 10, 64)
	hi, _ := strconv.ParseUint(hiS, 10, 64)
	if hi < lo {
		return numRange{}, fmt.Errorf("invalid range [%s]: end %d is less than start %d", s, hi, lo)
	}
	r := numRange{lo: lo, hi: hi}
	if len(loS) > 1 && loS[0] == '0' {
		r.width = len(loS)
	}
	return r, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// each calls fn for every host of the entry, in order, stopping at the first
// error. It allocates nothing beyond the host strings it passes.
func (e *hostEntry) each(fn func(hostAddr) error) error {
	if e.prefix.IsValid() {
		a := e.prefix.Addr()
		if a.Is4() && e.prefix.Bits() <= 30 {
			a = a.Next()
		}
		for k := uint64(0); k < e.count; k++ {
			s := a.String()
			if err := fn(hostAddr{host: s, name: s}); err != nil {
				return err
			}
			a = a.Next()
		}
		return nil
	}
	if len(e.ranges) == 0 {
		a, err := parseHost(e.raw)
		if err != nil {
			return fmt.Errorf("entry %q: %w", e.raw, err)
		}
		return fn(a)
	}
	cur := make([]uint64, len(e.ranges))
	for i, r := range e.ranges {
		cur[i] = r.lo
	}
	// One buffer for every host: string(b) then copies each at its exact
	// size, where a strings.Builder would regrow from nothing per host.
	var (
		b      []byte
		digits [20]byte
	)
	for {
		b = b[:0]
		for i, r := range e.ranges {
			b = append(b, e.lits[i]...)
			d := strconv.AppendUint(digits[:0], cur[i], 10)
			for k := len(d); k < r.width; k++ {
				b = append(b, '0')
			}
			b = append(b, d...)
		}
		b = append(b, e.lits[len(e.ranges)]...)
		s := string(b)
		a, err := parseHost(s)
		if err != nil {
			return fmt.Errorf("entry %q expands to %q: %w", e.raw, s, err)
		}
		if err := fn(a); err != nil {
			return err
		}
		// Odometer: the last range varies fastest.
		i := len(cur) - 1
		for ; i >= 0; i-- {
			if cur[i] < e.ranges[i].hi {
				cur[i]++
				break
			}
			cur[i] = e.ranges[i].lo
		}
		if i < 0 {
			return nil
		}
	}
}

// parseHost parses one literal host: a DNS name or IPv4 address with an
// optional ":port", a bare IPv6 address, or "[IPv6]" with an optional
// ":port".
func parseHost(s string) (hostAddr, error) {
	if s == "" {
		return hostAddr{}, errors.New("empty host")
	}
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return hostAddr{}, errors.New("missing ']' after IPv6 address")
		}
		a, err := parseIPv6(s[1:end])
		if err != nil {
			return hostAddr{}, err
		}
		name := a.String()
		rest := s[end+1:]
		if rest == "" {
			return hostAddr{host: name, name: name}, nil
		}
		ps, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return hostAddr{}, fmt.Errorf("unexpected %q after ']'", rest)
		}
		port, err := parsePort(ps)
		if err != nil {
			return hostAddr{}, err
		}
		return hostAddr{host: "[" + name + "]:" + strconv.Itoa(port), name: name, port: port}, nil
	}
	if strings.Count(s, ":") > 1 {
		a, err := parseIPv6(s)
		if err != nil {
			return hostAddr{}, fmt.Errorf("%w (write [address]:port to give a port)", err)
		}
		return hostAddr{host: a.String(), name: a.String()}, nil
	}
	name, ps, hasPort := strings.Cut(s, ":")
	port := 0
	if hasPort {
		var err error
		if port, err = parsePort(ps); err != nil {
			return hostAddr{}, err
		}
	}
	if a, err := netip.ParseAddr(name); err == nil && a.Is4() {
		name = a.String()
	} else if err := checkHostname(name); err != nil {
		return hostAddr{}, err
	}
	host := name
	if hasPort {
		host += ":" + strconv.Itoa(port)
	}
	return hostAddr{host: host, name: name, port: port}, nil
}

func parseIPv6(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, fmt.Errorf("invalid IPv6 address %q", s)
	}
	if z := a.Zone(); z != "" && !isName(z) {
		return netip.Addr{}, fmt.Errorf("invalid IPv6 zone %q", z)
	}
	return a, nil
}

func parsePort(s string) (int, error) {
	if !isDigits(s) || len(s) > 5 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	p, _ := strconv.Atoi(s)
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", p)
	}
	return p, nil
}

// checkHostname checks DNS name syntax: dot-separated labels of 1 to 63
// letters, digits, '-' or '_' (not starting or ending with '-'), at most 253
// characters, an optional trailing dot, and a last label that is not all
// digits (that would be a mistyped IPv4 address).
func checkHostname(s string) error {
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("invalid host name %q: want 1 to 253 characters", s)
	}
	// strings.SplitSeq allocates nothing, which matters when a range entry
	// expands to a million names.
	last := ""
	for l := range strings.SplitSeq(name, ".") {
		last = l
		if l == "" || len(l) > 63 {
			return fmt.Errorf("invalid host name %q: labels must be 1 to 63 characters", s)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("invalid host name %q: a label starts or ends with '-'", s)
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' && l[i] != '_' {
				return fmt.Errorf("invalid host name %q: character %q is not allowed", s, rune(l[i]))
			}
		}
	}
	if isDigits(last) {
		return fmt.Errorf("invalid IPv4 address or host name %q", s)
	}
	return nil
}

// entryError is a host entry's error with the entry's index in the set.
type entryError struct {
	index int
	err   error
}

// parseSetEntries parses every entry of a set and refuses the set when the
// entries together expand to more than limit hosts, before any expansion.
func parseSetEntries(hosts []string, limit int) ([]*hostEntry, []entryError) {
	var (
		entries []*hostEntry
		errs    []entryError
		total   uint64
	)
	for j, raw := range hosts {
		e, err := parseEntry(raw)
		if err != nil {
			errs = append(errs, entryError{j, err})
			continue
		}
		entries = append(entries, e)
		sum, carry := bits.Add64(total, e.count, 0)
		if carry != 0 || sum > uint64(max(limit, 0)) {
			errs = append(errs, entryError{j, fmt.Errorf(
				"entry %q expands to %s hosts, taking the set past max_targets_per_set (%d)",
				raw, formatCount(e.count), limit)})
			return entries, errs
		}
		total = sum
	}
	return entries, errs
}

// setCount is the number of hosts of entries that passed parseSetEntries.
func setCount(entries []*hostEntry) uint64 {
	var n uint64
	for _, e := range entries {
		n += e.count // bounded by the set's limit
	}
	return n
}

func formatCount(n uint64) string {
	if n == math.MaxUint64 {
		return "2^64 or more"
	}
	return strconv.FormatUint(n, 10)
}

// expandEntry expands one entry, refusing more than limit hosts.
func expandEntry(raw string, limit int) ([]hostAddr, error) {
	entries, errs := parseSetEntries([]string{raw}, limit)
	if len(errs) > 0 {
		return nil, errs[0].err
	}
	out := make([]hostAddr, 0, entries[0].count)
	err := entries[0].each(func(a hostAddr) error {
		out = append(out, a)
		return nil
	})
	return out, err
}

// probeRef is one enabled probe of a set with the canonical encoding of
// everything about it that is shared by the set's targets.
type probeRef struct {
	name    string
	timeout time.Duration
	icmp    *ICMPProbe
	tcp     *TCPProbe
	ssh     *SSHProbe
	// shared is the SHA-256 of the canonical encoding: hashing it rather
	// than the encoding keeps a target's fingerprint cheap.
	shared [sha256.Size]byte
	buf    []byte
}

func setProbes(hs *HostSet) ([]probeRef, error) {
	var refs []probeRef
	if p := hs.Probes.ICMP; p != nil {
		refs = append(refs, probeRef{name: ProbeICMP, timeout: p.Timeout.D(), icmp: p})
	}
	if p := hs.Probes.TCP; p != nil {
		refs = append(refs, probeRef{name: ProbeTCP, timeout: p.Timeout.D(), tcp: p})
	}
	if p := hs.Probes.SSH; p != nil {
		refs = append(refs, probeRef{name: ProbeSSH, timeout: p.Timeout.D(), ssh: p})
	}
	for i := range refs {
		r := &refs[i]
		// encoding/json is canonical enough here: struct fields in
		// declaration order, map keys sorted.
		b, err := json.Marshal(struct {
			Set           string
			Probe         string
			Interval      time.Duration
			RetryInterval time.Duration
			Timeout       time.Duration
			SourceAddress string
			Labels        map[string]string
			IP            IPPolicy
			ICMP          *ICMPProbe
			TCP           *TCPProbe
			SSH           *SSHProbe
		}{hs.Name, r.name, hs.Interval.D(), hs.RetryInterval.D(), r.timeout, hs.SourceAddress, hs.Labels, hs.IPPolicy(), r.icmp, r.tcp, r.ssh})
		if err != nil {
			return nil, fmt.Errorf("host set %q: encode %s probe: %w", hs.Name, r.name, err)
		}
		r.shared = sha256.Sum256(b)
	}
	return refs, nil
}

// targetsPerHost returns the most targets one host of a set with probes
// expands to: one per probe, and one per port of a tcp probe.
func targetsPerHost(probes []probeRef) uint64 {
	var n uint64
	for i := range probes {
		if t := probes[i].tcp; t != nil && len(t.PortList()) > 1 {
			n += uint64(len(t.PortList()))
			continue
		}
		n++
	}
	return n
}

// fingerprint hashes the digest of the shared probe encoding and the
// host's own fields, each length-prefixed so that no two different inputs
// encode alike. It reuses r.buf, so a probeRef serves one goroutine.
func (r *probeRef) fingerprint(a hostAddr, extra []byte) string {
	b := append(r.buf[:0], r.shared[:]...)
	for _, s := range []string{a.host, a.name} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(a.port))
	// A discovered host's own label values; nil for the set's.
	b = append(b, extra...)
	r.buf = b
	sum := sha256.Sum256(b)
	// Half the digest, as raw bytes: still far beyond an accidental
	// match, and a 16-byte allocation per target instead of 64 for the
	// hex form (6 MB less at 100,000 targets). Nothing prints it.
	return string(sum[:fingerprintSize])
}

// fingerprintSize is the length of Target.Fingerprint.
const fingerprintSize = 16

// DiscoveredHost is one host entry a discovery source found for a set, in
// the syntax of hosts (a name, an address, host:port, a CIDR block or a
// range), with the values of the set's label names that apply to it.
type DiscoveredHost struct {
	Entry string
	// Labels holds exactly the set's label names; nil means the set's
	// static Labels. Hosts may share one map, which must not be modified.
	Labels map[string]string
}

// Targets expands every host set into one Target per (host, enabled probe),
// in set order, then entry order, then probe order (icmp, tcp, ssh). A host
// that appears again within a set (compared case-insensitively) is dropped,
// and each entry that lost hosts that way yields one warning. The targets
// share the set's Labels map and probe configuration, which must not be
// modified.
func (c *Config) Targets() ([]*Target, []string, error) {
	return c.TargetsWith(nil)
}

// TargetsWith is Targets with each set's discovered hosts after its own
// hosts, both under the same max_targets_per_set and max_targets caps. A
// discovered host already listed (by hosts or an earlier source) is
// dropped with a warning, like a duplicate host entry.
func (c *Config) TargetsWith(discovered map[string][]DiscoveredHost) ([]*Target, []string, error) {
	limit := c.Global.MaxTargetsPerSet
	if limit <= 0 {
		limit = DefaultMaxTargetsPerSet
	}
	maxTargets := c.Global.MaxTargets
	if maxTargets <= 0 {
		maxTargets = DefaultMaxTargets
	}
	maxTargets = min(maxTargets, MaxTargetsCeiling)
	// Count first, so that a config past max_targets is refused before
	// anything is expanded and the result is allocated once.
	type setPlan struct {
		entries []*hostEntry
		// labels[i] are the labels of entries[i]; nil for the set's own.
		labels []map[string]string
		probes []probeRef
		hosts  uint64
		src    netip.Addr
	}
	plans := make([]setPlan, len(c.HostSets))
	var all uint64
	for i := range c.HostSets {
		hs := &c.HostSets[i]
		entries, errs := parseSetEntries(hs.Hosts, limit)
		if len(errs) > 0 {
			return nil, nil, fmt.Errorf("host set %q: hosts[%d]: %w", hs.Name, errs[0].index, errs[0].err)
		}
		labels := make([]map[string]string, len(entries), len(entries)+len(discovered[hs.Name]))
		hosts := setCount(entries)
		for _, d := range discovered[hs.Name] {
			e, err := parseEntry(d.Entry)
			if err != nil {
				return nil, nil, fmt.Errorf("host set %q: discovered %w", hs.Name, err)
			}
			if hosts += e.count; e.count > uint64(limit) || hosts > uint64(limit) {
				return nil, nil, fmt.Errorf("host set %q: hosts and discovered targets expand to more than max_targets_per_set (%d)", hs.Name, limit)
			}
			entries = append(entries, e)
			l := d.Labels
			if l == nil || maps.Equal(l, hs.Labels) {
				l = nil
			}
			labels = append(labels, l)
		}
		probes, err := setProbes(hs)
		if err != nil {
			return nil, nil, err
		}
		var src netip.Addr
		if hs.SourceAddress != "" {
			if src, err = netip.ParseAddr(hs.SourceAddress); err != nil {
				return nil, nil, fmt.Errorf("host set %q: source_address: %w", hs.Name, err)
			}
		}
		all += hosts * targetsPerHost(probes) // bounded per set by limit: no overflow
		if all > uint64(maxTargets) {
			return nil, nil, fmt.Errorf("host set %q: the host sets expand to more than max_targets (%d) targets", hs.Name, maxTargets)
		}
		plans[i] = setPlan{entries, labels, probes, hosts, src}
	}
	var (
		targets  = make([]*Target, 0, all)
		warnings []string
	)
	for i := range c.HostSets {
		hs := &c.HostSets[i]
		entries, probes, total := plans[i].entries, plans[i].probes, plans[i].hosts
		retry := hs.RetryInterval.D()
		if retry <= 0 {
			// A hand-built config without defaults applied.
			retry = hs.Interval.D()
		}
		ip := hs.IPPolicy()
		needPort := hs.Probes.TCP != nil && len(hs.Probes.TCP.PortList()) == 0
		// One block per set; its capacity is never exceeded, so the
		// pointers into it stay valid.
		block := make([]Target, 0, total*targetsPerHost(probes))
		seen := make(map[string]struct{}, total)
		var labelBuf []byte
		for ei, e := range entries {
			labels, extra := hs.Labels, []byte(nil)
			if l := plans[i].labels[ei]; l != nil {
				labels = l
				labelBuf = appendLabels(labelBuf[:0], l)
				extra = labelBuf
			}
			discoveredEntry := ei >= len(hs.Hosts)
			dups, firstDup := 0, ""
			err := e.each(func(a hostAddr) error {
				if discoveredEntry && needPort && a.port == 0 {
					return fmt.Errorf("discovered entry %q has no port and probes.tcp.port is not set", e.raw)
				}
				k := strings.ToLower(a.host)
				if _, dup := seen[k]; dup {
					if dups == 0 {
						firstDup = a.host
					}
					dups++
					return nil
				}
				seen[k] = struct{}{}
				for pi := range probes {
					p := &probes[pi]
					add := func(a hostAddr) {
						block = append(block, Target{
							Set:           hs.Name,
							Host:          a.host,
							Name:          a.name,
							Port:          a.port,
							Probe:         p.name,
							Interval:      hs.Interval.D(),
							RetryInterval: retry,
							Timeout:       p.timeout,
							SourceAddress: plans[i].src,
							Labels:        labels,
							IP:            ip,
							ICMP:          p.icmp,
							TCP:           p.tcp,
							SSH:           p.ssh,
							Fingerprint:   p.fingerprint(a, extra),
						})
						t := &block[len(block)-1]
						t.Hash = t.Key().Hash()
						targets = append(targets, t)
					}
					// A tcp probe of a host without a port of its own
					// runs once per configured port.
					if p.tcp == nil || a.port != 0 || len(p.tcp.PortList()) == 0 {
						add(a)
						continue
					}
					for _, port := range p.tcp.PortList() {
						pa := a
						pa.port = port
						add(pa)
					}
				}
				return nil
			})
			if err != nil {
				return nil, nil, fmt.Errorf("host set %q: %w", hs.Name, err)
			}
			if dups > 0 {
				kind := "entry"
				if discoveredEntry {
					kind = "discovered entry"
				}
				warnings = append(warnings, fmt.Sprintf(
					"host set %q: %s %q: %d duplicate host(s) dropped, first %q", hs.Name, kind, e.raw, dups, firstDup))
			}
		}
	}
	return targets, warnings, nil
}

// appendLabels encodes labels canonically (sorted, length-prefixed) for a
// discovered host's fingerprint.
func appendLabels(b []byte, labels map[string]string) []byte {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		for _, s := range []string{k, labels[k]} {
			b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// CheckDiscovered checks the hosts one discovery source found for the set
// named set: every entry parses, the set's hosts plus others (hosts other
// sources of the set contribute) plus these stay within
// max_targets_per_set, and every host has a port where the tcp probe needs
// one. It returns how many hosts the entries expand to.
func (c *Config) CheckDiscovered(set string, hosts []DiscoveredHost, others int) (int, error) {
	var hs *HostSet
	for i := range c.HostSets {
		if c.HostSets[i].Name == set {
			hs = &c.HostSets[i]
		}
	}
	if hs == nil {
		return 0, fmt.Errorf("no host set %q", set)
	}
	limit := c.Global.MaxTargetsPerSet
	if limit <= 0 {
		limit = DefaultMaxTargetsPerSet
	}
	static, _ := parseSetEntries(hs.Hosts, limit)
	used := setCount(static) + uint64(max(others, 0))
	needPort := hs.Probes.TCP != nil && len(hs.Probes.TCP.PortList()) == 0
	var n uint64
	for _, d := range hosts {
		e, err := parseEntry(d.Entry)
		if err != nil {
			return 0, err
		}
		if n += e.count; e.count > uint64(limit) || used+n > uint64(limit) {
			return 0, &CapError{Set: set, Limit: limit}
		}
		if needPort {
			if err := e.each(func(a hostAddr) error {
				if a.port == 0 {
					return fmt.Errorf("entry %q has no port and probes.tcp.port is not set", e.raw)
				}
				return nil
			}); err != nil {
				return 0, err
			}
		}
	}
	return int(n), nil
}

// CapError says a set's hosts and discovered targets together would pass
// max_targets_per_set.
type CapError struct {
	Set   string
	Limit int
}

func (e *CapError) Error() string {
	return fmt.Sprintf("host set %q: hosts and discovered targets expand to more than max_targets_per_set (%d)", e.Set, e.Limit)
}
