package dns

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// recheck is how often the hosts file and resolv.conf are checked for
// changes, as Go's own resolver does: an edit takes effect within seconds,
// without a stat per lookup.
const recheck = 5 * time.Second

// watched is a file parsed once and parsed again when its modification
// time or size changed, checked at most every recheck.
type watched[T any] struct {
	path  string
	parse func(data []byte) (T, error)

	// mu guards the fields below.
	mu      sync.Mutex
	loaded  bool
	checked time.Time
	mod     time.Time
	size    int64
	val     T
	err     error
}

// get returns the parsed file. A missing file parses as empty input.
func (w *watched[T]) get(now time.Time) (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.loaded && now.Sub(w.checked) < recheck && now.Sub(w.checked) >= 0 {
		return w.val, w.err
	}
	w.checked = now
	fi, err := os.Stat(w.path)
	var mod time.Time
	var size int64 = -1
	if err == nil {
		mod, size = fi.ModTime(), fi.Size()
	}
	if w.loaded && mod.Equal(w.mod) && size == w.size {
		return w.val, w.err
	}
	w.loaded, w.mod, w.size = true, mod, size
	data, err := os.ReadFile(w.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		var zero T
		w.val, w.err = zero, err
		return w.val, w.err
	}
	w.val, w.err = w.parse(data)
	return w.val, w.err
}

// hostsTable maps a lower-case name without trailing dot to its addresses,
// in file order.
type hostsTable map[string][]netip.Addr

// hostsKey is the hostsTable key of name.
func hostsKey(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// readHosts parses a hosts file: an address, then names, per line; '#'
// starts a comment; lines that do not parse are skipped, as by the system
// resolver.
func readHosts(data []byte) (hostsTable, error) {
	t := hostsTable{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		addr, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		for _, name := range f[1:] {
			k := hostsKey(name)
			t[k] = append(t[k], addr)
		}
	}
	return t, sc.Err()
}

// readResolvConf parses resolv.conf. Without nameservers (or without the
// file) the local host is asked, as by the system resolver.
func readResolvConf(data []byte) (*mdns.ClientConfig, error) {
	c, err := mdns.ClientConfigFromReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if len(c.Servers) == 0 {
		c.Servers = []string{"127.0.0.1", "::1"}
	}
	return c, nil
}
