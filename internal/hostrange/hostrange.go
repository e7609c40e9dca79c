package hostrange

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Compare orders a and b naturally: two IP addresses by value (IPv4 before
// IPv6), an address before a name, and names piecewise, digit runs by
// numeric value (a shorter zero padding first on a tie), other runs byte by
// byte. It returns -1, 0 or +1 like cmp.Compare.
func Compare(a, b string) int {
	if a == b {
		return 0
	}
	ia, errA := netip.ParseAddr(a)
	ib, errB := netip.ParseAddr(b)
	switch {
	case errA == nil && errB == nil:
		if c := ia.Compare(ib); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da != db {
			// A digit sorts before a letter, as in byte order.
			return cmp.Compare(a[0], b[0])
		}
		na, nb := run(a, da), run(b, db)
		ra, rb := a[:na], b[:nb]
		if da {
			if c := compareDigits(ra, rb); c != 0 {
				return c
			}
		} else if c := cmp.Compare(ra, rb); c != 0 {
			return c
		}
		a, b = a[na:], b[nb:]
	}
	return cmp.Compare(len(a), len(b))
}

// Sort sorts hosts in natural order.
func Sort(hosts []string) { slices.SortFunc(hosts, Compare) }

// compareDigits compares two runs of decimal digits by value, of any length.
func compareDigits(a, b string) int {
	ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if c := cmp.Compare(len(ta), len(tb)); c != 0 {
		return c
	}
	if c := cmp.Compare(ta, tb); c != 0 {
		return c
	}
	return cmp.Compare(len(a), len(b))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// run returns the length of the leading run of s whose bytes are all digits
// (digits true) or all non-digits.
func run(s string, digits bool) int {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return i
}

// group is hosts that differ only in their last digit run.
type group struct {
	prefix, suffix string
	width          int // zero padding of the numbers; 0 when unpadded
	nums           []uint64
}

// Compress folds hosts into a comma-separated list of ranges: hosts that
// differ only in their last run of digits share one bracket,
// "127.0.1.[1-2,4]", "web[01-03]". Zero padding is kept, so web01 and web1
// stay in separate groups (web09 and web10 share one); a host without digits stands alone. Duplicates
// are dropped. Groups come in the natural order of their first host.
func Compress(hosts []string) string {
	return strings.Join(CompressList(hosts), ",")
}

// CompressList is Compress returning one entry per group.
func CompressList(hosts []string) []string {
	sorted := slices.Clone(hosts)
	Sort(sorted)
	sorted = slices.Compact(sorted)

	var groups []*group
	index := map[[2]string]map[int]*group{}
	var out []string
	for _, h := range sorted {
		end := len(h)
		for end > 0 && !isDigit(h[end-1]) {
			end--
		}
		start := end
		for start > 0 && isDigit(h[start-1]) {
			start--
		}
		digits := h[start:end]
		n, err := strconv.ParseUint(digits, 10, 64)
		if start == end || err != nil {
			groups = append(groups, &group{prefix: h, width: -1})
			continue
		}
		width := 0
		if len(digits) > 1 && digits[0] == '0' {
			width = len(digits)
		}
		k := [2]string{h[:start], h[end:]}
		byWidth := index[k]
		if byWidth == nil {
			byWidth = map[int]*group{}
			index[k] = byWidth
		}
		g := byWidth[width]
		if g == nil {
			g = &group{prefix: h[:start], suffix: h[end:], width: width}
			byWidth[width] = g
			groups = append(groups, g)
		}
		g.nums = append(g.nums, n)
	}
	// An unpadded number as long as a padded group's width belongs to
	// it: web09, web10 and web11 are one range.
	for _, byWidth := range index {
		unpadded := byWidth[0]
		if unpadded == nil {
			continue
		}
		kept := unpadded.nums[:0]
		for _, n := range unpadded.nums {
			if g := byWidth[len(strconv.FormatUint(n, 10))]; g != nil && g != unpadded {
				g.nums = append(g.nums, n)
				continue
			}
			kept = append(kept, n)
		}
		unpadded.nums = kept
	}
	for _, g := range groups {
		if g.width >= 0 && len(g.nums) == 0 {
			continue
		}
		out = append(out, g.String())
	}
	return out
}

func (g *group) String() string {
	if g.width < 0 {
		return g.prefix
	}
	slices.Sort(g.nums)
	format := func(n uint64) string {
		s := strconv.FormatUint(n, 10)
		if pad := g.width - len(s); pad > 0 {
			s = strings.Repeat("0", pad) + s
		}
		return s
	}
	if len(g.nums) == 1 {
		return g.prefix + format(g.nums[0]) + g.suffix
	}
	var b strings.Builder
	b.WriteString(g.prefix)
	b.WriteByte('[')
	for i := 0; i < len(g.nums); {
		j := i
		for j+1 < len(g.nums) && g.nums[j+1] == g.nums[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(format(g.nums[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(format(g.nums[j]))
		}
		i = j + 1
	}
	b.WriteByte(']')
	b.WriteString(g.suffix)
	return b.String()
}
