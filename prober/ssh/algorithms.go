package ssh

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// setAlgorithms applies the probe's algorithms block to ccfg. The
// defaults are what x/crypto/ssh calls secure (SupportedAlgorithms): no
// SHA-1 key exchange, no CBC or RC4 cipher and no SHA-1 (ssh-rsa) or DSA
// host key signature, unless the block names them. hostKeys is the host
// key preference known_hosts suggests, nil for none.
func setAlgorithms(ccfg *ssh.ClientConfig, a *config.Algorithms, hostKeys []string) {
	def := ssh.SupportedAlgorithms()
	pick := func(k config.AlgorithmKind, defaults []string) []string {
		if r := a.Resolve(k, defaults); r != nil {
			return r
		}
		return defaults
	}
	ccfg.KeyExchanges = pick(config.AlgorithmKEX, def.KeyExchanges)
	ccfg.Ciphers = pick(config.AlgorithmCiphers, def.Ciphers)
	ccfg.MACs = pick(config.AlgorithmMACs, def.MACs)
	base := def.HostKeys
	if hostKeys != nil {
		base = slices.DeleteFunc(slices.Clone(hostKeys), config.IsWeakAlgorithm)
	}
	ccfg.HostKeyAlgorithms = pick(config.AlgorithmHostKey, base)
}

// negotiationKinds maps the What of an ssh.AlgorithmNegotiationError to
// the key of the algorithms block that would fix it.
func negotiationKind(what string) config.AlgorithmKind {
	switch {
	case strings.Contains(what, "key exchange"):
		return config.AlgorithmKEX
	case strings.Contains(what, "host key"):
		return config.AlgorithmHostKey
	case strings.Contains(what, "cipher"):
		return config.AlgorithmCiphers
	case strings.Contains(what, "MAC"):
		return config.AlgorithmMACs
	}
	return ""
}

// explainNegotiation rewords a failed algorithm negotiation so that it
// names what the server offered and the line that would enable it.
func explainNegotiation(err error) error {
	var ne *ssh.AlgorithmNegotiationError
	if !errors.As(err, &ne) {
		return err
	}
	k := negotiationKind(ne.What)
	if k == "" {
		return fmt.Errorf("no common %s algorithm: the server offers %s: %w", ne.What, strings.Join(ne.RequestedAlgorithms, ", "), err)
	}
	known := config.KnownAlgorithms(k)
	var usable []string
	for _, n := range ne.RequestedAlgorithms {
		if slices.Contains(known, n) {
			usable = append(usable, `"+`+n+`"`)
		}
	}
	hint := "none of them is implemented by this exporter"
	if len(usable) > 0 {
		hint = fmt.Sprintf("to accept it add algorithms: {%s: [%s]} to the ssh block", k, usable[0])
	}
	return fmt.Errorf("no common %s algorithm: the server offers %s only; %s: %w",
		k, strings.Join(ne.RequestedAlgorithms, ", "), hint, err)
}

// connInfo reads the negotiated algorithms and the server version of an
// established connection.
func connInfo(c ssh.Conn) *probe.ConnInfo {
	info := &probe.ConnInfo{ServerVersion: sanitize(string(c.ServerVersion()), maxVersionBytes)}
	if am, ok := c.(ssh.AlgorithmsConnMetadata); ok {
		algs := am.Algorithms()
		info.KEX, info.HostKeyAlgorithm = algs.KeyExchange, algs.HostKey
		info.Cipher, info.MAC = algs.Write.Cipher, algs.Write.MAC
	}
	if info.MAC == "" && info.Cipher != "" {
		info.MAC = "<implicit>"
	}
	return info
}
