package main

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostClass is how a simulated host behaves. Every host has exactly one class;
// drift is a separate, independent property.
type hostClass uint8

// The host classes. classHealthy must stay zero so that a zero hostClass is a
// working host.
const (
	classHealthy    hostClass = iota
	classRefused              // no listener: connections get a RST
	classTarpit               // accepts TCP, never sends a banner
	classAuthReject           // rejects every authentication attempt
	classHang                 // commands never exit until the client closes
	classSlow                 // commands take slowDelay
	numClasses
)

// faultClasses lists the faulty classes in the order their hash ranks are
// assigned; changing the order changes which address lands in which class.
func faultClasses() [5]hostClass {
	return [...]hostClass{classRefused, classTarpit, classAuthReject, classHang, classSlow}
}

// String returns the class name used in classes.json and in logs.
func (c hostClass) String() string {
	switch c {
	case classHealthy:
		return "healthy"
	case classRefused:
		return "refused"
	case classTarpit:
		return "tarpit"
	case classAuthReject:
		return "auth_reject"
	case classHang:
		return "hang"
	case classSlow:
		return "slow"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// fleetOptions describe the simulated fleet: everything gen and serve must
// agree on so that they derive the same addresses, host keys and classes.
type fleetOptions struct {
	// N is the number of hosts.
	N int
	// Base is the first host address; it and every following one are in 127/8.
	Base netip.Addr
	// Port is the SSH port every host listens on.
	Port int
	// Seed makes keys, classes and command output reproducible.
	Seed string
	// Fractions of hosts per faulty class, indexed by hostClass; the healthy
	// entry is ignored. Their sum is at most 1.
	Fractions [numClasses]float64
	// Drift is the fraction of hosts whose command output differs from the
	// rest of the fleet.
	Drift float64
}

// simHost is the fixed, tiny per-host state shared by gen and serve.
type simHost struct {
	Addr  netip.Addr
	Class hostClass
	Drift bool
}

// validate checks the options without touching the network.
func (o *fleetOptions) validate() error {
	if o.N < 1 {
		return fmt.Errorf("--n must be at least 1, got %d", o.N)
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("--port must be in 1..65535, got %d", o.Port)
	}
	var sum float64
	for _, c := range faultClasses() {
		f := o.Fractions[c]
		if math.IsNaN(f) || f < 0 || f > 1 {
			return fmt.Errorf("fraction of %s hosts must be in [0,1], got %v", c, f)
		}
		sum += f
	}
	// Allow for float rounding of e.g. 0.1*10.
	if sum > 1+1e-9 {
		return fmt.Errorf("fractions of faulty hosts add up to %v, more than 1", sum)
	}
	if math.IsNaN(o.Drift) || o.Drift < 0 || o.Drift > 1 {
		return fmt.Errorf("--drift must be in [0,1], got %v", o.Drift)
	}
	_, err := hostAddrs(o.Base, o.N)
	return err
}

// hostAddrs returns n addresses starting at base, skipping those whose last
// octet is 0 or 255 so that no host sits on a classful network or broadcast
// address. Every address must be in 127/8: the simulator never listens on
// anything else.
func hostAddrs(base netip.Addr, n int) ([]netip.Addr, error) {
	// Linux routes the whole block to lo.
	loopback := netip.PrefixFrom(netip.AddrFrom4([4]byte{127}), 8)
	if !base.Is4() || !loopback.Contains(base) {
		return nil, fmt.Errorf("base address %s is not in %s", base, loopback)
	}
	addrs := make([]netip.Addr, 0, n)
	a := base
	for len(addrs) < n {
		if !loopback.Contains(a) {
			return nil, fmt.Errorf("%d hosts from %s do not fit in %s", n, base, loopback)
		}
		if b := a.As4(); b[3] != 0 && b[3] != 255 {
			addrs = append(addrs, a)
		}
		a = a.Next()
	}
	return addrs, nil
}

// buildFleet derives every host of the fleet. Classes are assigned by rank:
// hosts are ordered by a hash of seed and address, and consecutive runs of
// that order go to each faulty class, so every class gets exactly
// round(fraction*N) hosts (cumulative rounding keeps the total at most N) and
// the choice depends only on seed, address, N and the fractions. Drift is
// chosen the same way with an independent hash.
func buildFleet(o *fleetOptions) ([]simHost, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	addrs, err := hostAddrs(o.Base, o.N)
	if err != nil {
		return nil, err
	}
	hosts := make([]simHost, len(addrs))
	for i, a := range addrs {
		hosts[i].Addr = a
	}

	order := rankBy(addrs, "class", o.Seed)
	var cum float64
	start := 0
	for _, c := range faultClasses() {
		cum += o.Fractions[c]
		end := min(int(math.Round(cum*float64(o.N))), o.N)
		for _, i := range order[start:max(start, end)] {
			hosts[i].Class = c
		}
		start = max(start, end)
	}

	nDrift := min(int(math.Round(o.Drift*float64(o.N))), o.N)
	for _, i := range rankBy(addrs, "drift", o.Seed)[:nDrift] {
		hosts[i].Drift = true
	}
	return hosts, nil
}

// rankBy returns the indexes of addrs ordered by SHA-256(purpose, seed, addr).
func rankBy(addrs []netip.Addr, purpose, seed string) []int {
	type ranked struct {
		key uint64
		idx int
	}
	r := make([]ranked, len(addrs))
	for i, a := range addrs {
		sum := sha256.Sum256([]byte(purpose + "\x00" + seed + "\x00" + a.String()))
		r[i] = ranked{key: binary.BigEndian.Uint64(sum[:8]), idx: i}
	}
	slices.SortFunc(r, func(a, b ranked) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	out := make([]int, len(r))
	for i, x := range r {
		out[i] = x.idx
	}
	return out
}

// hostSigner derives the host's ed25519 key as
// ed25519.NewKeyFromSeed(SHA-256(seed || addr)), so that gen can write
// known_hosts without talking to serve.
func hostSigner(seed string, addr netip.Addr) (ssh.Signer, error) {
	sum := sha256.Sum256([]byte(seed + addr.String()))
	return ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(sum[:]))
}

// clientKey derives the client key pair that gen writes as id_ed25519.
func clientKey(seed string) ed25519.PrivateKey {
	sum := sha256.Sum256([]byte("client\x00" + seed))
	return ed25519.NewKeyFromSeed(sum[:])
}

// hostPort returns addr:port in the form ssh clients dial.
func hostPort(addr netip.Addr, port int) string {
	return net.JoinHostPort(addr.String(), strconv.Itoa(port))
}

// knownHostsLine returns the known_hosts line of one host: "[addr]:port key"
// or "addr key" when port is 22.
func knownHostsLine(addr netip.Addr, port int, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(hostPort(addr, port))}, key)
}

// commandOutput returns what a host prints for the command line cmd and the
// exit status it reports. Output does not depend on the host, only on seed,
// command and drift, so a healthy fleet yields one output hash per command
// and a drifted host stands out:
//
//   - "hostname" prints the host's address (the one per-host output);
//   - "exit N" prints nothing and exits with status N;
//   - "bytes N" prints N bytes (N at most maxBytesCommand);
//   - anything else prints "ok\n" and a hex line derived from
//     SHA-256(seed, cmd), or from SHA-256("drift", seed, cmd) on a drifted host.
func commandOutput(seed string, h *simHost, cmd string) ([]byte, uint32) {
	if cmd == "hostname" {
		return []byte(h.Addr.String() + "\n"), 0
	}
	if arg, ok := strings.CutPrefix(cmd, "exit "); ok {
		n, err := strconv.ParseUint(arg, 10, 8)
		if err == nil {
			return nil, uint32(n)
		}
	}
	if arg, ok := strings.CutPrefix(cmd, "bytes "); ok {
		n, err := strconv.ParseInt(arg, 10, 64)
		if err == nil && n >= 0 && n <= maxBytesCommand {
			line := []byte(cmdDigest(seed, h.Drift, cmd) + "\n")
			return bytes.Repeat(line, int(n)/len(line)+1)[:n], 0
		}
	}
	return []byte("ok\n" + cmdDigest(seed, h.Drift, cmd) + "\n"), 0
}

// maxBytesCommand bounds "bytes N" so a typo cannot exhaust memory.
const maxBytesCommand = 64 << 20

func cmdDigest(seed string, drift bool, cmd string) string {
	prefix := ""
	if drift {
		prefix = "drift\x00"
	}
	sum := sha256.Sum256([]byte(prefix + seed + "\x00" + cmd))
	return hex.EncodeToString(sum[:16])
}
