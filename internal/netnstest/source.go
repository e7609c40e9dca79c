package netnstest

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// nftSourceChain holds the per-source counters, apart from the fault rules
// so that Clear, Loss and Blackhole leave them alone. It hooks input: only
// packets for the host namespace itself are counted, after any fault rule
// in prerouting has dropped its share.
const nftSourceChain = "src"

// AddClientAddr gives the client's veth end a second address, with a route
// back to it in the host namespace, and returns it: a multi-homed client
// whose probes can leave from either address. The address is the client's
// slot in 10.206.0.0/16, so it exists only inside the test namespaces.
func (n *NS) AddClientAddr(t testing.TB) netip.Addr {
	t.Helper()
	b := n.ClientAddr.As4()
	b[1] = 206
	a := netip.AddrFrom4(b)
	n.must(t, "-n", n.ClientName, "addr", "add", a.String()+"/32", "dev", vethClient)
	n.must(t, "-n", n.HostName, "route", "add", a.String()+"/32", "via", n.ClientAddr.String())
	return a
}

// CountSources counts, for each IPv4 address given, the ICMP and the TCP
// packets from it that reach the host namespace, in named nftables
// counters read by FromCount. Call it once per test.
func (n *NS) CountSources(t testing.TB, addrs ...netip.Addr) {
	t.Helper()
	cmds := []string{fmt.Sprintf("add chain inet %s %s { type filter hook input priority filter; policy accept; }", nftTable, nftSourceChain)}
	for _, a := range addrs {
		if !a.Is4() {
			t.Fatalf("netnstest: count %s: only IPv4 addresses are supported", a)
		}
		for _, proto := range []string{"icmp", "tcp"} {
			name := sourceCounter(a, proto)
			cmds = append(cmds,
				fmt.Sprintf("add counter inet %s %s", nftTable, name),
				fmt.Sprintf("add rule inet %s %s ip saddr %s meta l4proto %s counter name %q", nftTable, nftSourceChain, a, proto, name))
		}
	}
	n.nft(t, strings.Join(cmds, "\n"))
}

// nftNamedCounter matches the value of a listed named counter.
var nftNamedCounter = regexp.MustCompile(`packets (\d+) bytes \d+`)

// FromCount returns how many packets of proto ("icmp" or "tcp") from addr
// the host namespace has received since CountSources.
func (n *NS) FromCount(t testing.TB, addr netip.Addr, proto string) int {
	t.Helper()
	out := n.nft(t, fmt.Sprintf("list counter inet %s %s", nftTable, sourceCounter(addr, proto)))
	m := nftNamedCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("netnstest: no counter value in %q", out)
	}
	v, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatalf("netnstest: nft counter %q: %v", m[1], err)
	}
	return v
}

// sourceCounter names the counter of proto packets from a.
func sourceCounter(a netip.Addr, proto string) string {
	return "from_" + strings.ReplaceAll(a.String(), ".", "_") + "_" + proto
}
