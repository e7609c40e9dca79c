package config

import (
	"slices"
	"strings"
)

// The SSH algorithm names golang.org/x/crypto/ssh implements, by kind, in
// its preference order: secure ones first, then its insecure set. config
// imports no SSH library (readers of the config must not link one), so
// the names are listed here; a test of prober/ssh compares them with the
// library's SupportedAlgorithms and InsecureAlgorithms, so a library
// update that adds or drops one fails there.
var (
	kexNames = []string{
		"mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org",
		"ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
		"diffie-hellman-group14-sha256", "diffie-hellman-group16-sha512",
		"diffie-hellman-group-exchange-sha256",
		"diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1", "diffie-hellman-group-exchange-sha1",
	}
	cipherNames = []string{
		"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
		"aes128-ctr", "aes192-ctr", "aes256-ctr",
		"aes128-cbc", "3des-cbc", "arcfour256", "arcfour128", "arcfour",
	}
	macNames = []string{
		"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512",
		"hmac-sha1", "hmac-sha1-96",
	}
	hostKeyNames = []string{
		"rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512-cert-v01@openssh.com",
		"ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
		"ecdsa-sha2-nistp521-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com",
		"rsa-sha2-256", "rsa-sha2-512", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
		"ssh-ed25519",
		"ssh-rsa", "ssh-dss", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
	}
	// weakNames are the names x/crypto/ssh calls insecure, plus hmac-sha1
	// (which it still offers by default): SHA-1, CBC, RC4, 1024-bit DH and
	// DSA.
	weakNames = []string{
		"diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1", "diffie-hellman-group-exchange-sha1",
		"aes128-cbc", "3des-cbc", "arcfour256", "arcfour128", "arcfour",
		"hmac-sha1", "hmac-sha1-96",
		"ssh-rsa", "ssh-dss", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
	}
)

// AlgorithmKind names one list of the algorithms block.
type AlgorithmKind string

// The keys of the algorithms block.
const (
	AlgorithmKEX     AlgorithmKind = "kex"
	AlgorithmCiphers AlgorithmKind = "ciphers"
	AlgorithmMACs    AlgorithmKind = "macs"
	AlgorithmHostKey AlgorithmKind = "host_key"
)

// KnownAlgorithms returns every algorithm name of kind k the SSH prober
// can negotiate, secure ones first. Each call returns a new slice.
func KnownAlgorithms(k AlgorithmKind) []string {
	switch k {
	case AlgorithmKEX:
		return slices.Clone(kexNames)
	case AlgorithmCiphers:
		return slices.Clone(cipherNames)
	case AlgorithmMACs:
		return slices.Clone(macNames)
	case AlgorithmHostKey:
		return slices.Clone(hostKeyNames)
	}
	return nil
}

// IsWeakAlgorithm reports whether name is an algorithm considered weak:
// SHA-1 based, CBC mode, RC4, or DSA.
func IsWeakAlgorithm(name string) bool { return slices.Contains(weakNames, name) }

// List returns the list of kind k.
func (a *Algorithms) List(k AlgorithmKind) []string {
	switch k {
	case AlgorithmKEX:
		return a.KEX
	case AlgorithmCiphers:
		return a.Ciphers
	case AlgorithmMACs:
		return a.MACs
	case AlgorithmHostKey:
		return a.HostKey
	}
	return nil
}

// AlgorithmKinds returns the kinds of the algorithms block in config order.
func AlgorithmKinds() []AlgorithmKind {
	return []AlgorithmKind{AlgorithmKEX, AlgorithmCiphers, AlgorithmMACs, AlgorithmHostKey}
}

// Resolve returns the algorithms of kind k to offer, given the defaults:
// nil when the list is empty (use the defaults), the list itself when it
// replaces them, or the defaults followed by the "+" entries not among
// them yet.
func (a *Algorithms) Resolve(k AlgorithmKind, defaults []string) []string {
	list := a.List(k)
	if len(list) == 0 {
		return nil
	}
	if !strings.HasPrefix(list[0], "+") {
		return slices.Clone(list)
	}
	out := slices.Clone(defaults)
	for _, n := range list {
		n = strings.TrimPrefix(n, "+")
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// WeakAlgorithms returns the weak algorithm names the probe's algorithms
// block enables explicitly, as "kind name" pairs, for the warning at start
// and in --config.check.
func (s *SSHProbe) WeakAlgorithms() []string {
	var out []string
	for _, k := range AlgorithmKinds() {
		for _, n := range s.Algorithms.List(k) {
			n = strings.TrimPrefix(n, "+")
			if IsWeakAlgorithm(n) {
				out = append(out, string(k)+" "+n)
			}
		}
	}
	return out
}
