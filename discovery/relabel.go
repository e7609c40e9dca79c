package discovery

import (
	"crypto/md5" //nolint:gosec // hashmod is defined on MD5; it is no security boundary
	"encoding/binary"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Relabel applies cfgs to labels in order, with Prometheus' semantics: a
// label set to the empty value is removed, keep and drop end the walk for
// a target they discard. It returns the resulting labels (a new map; the
// input is not modified) and whether the target is kept.
func Relabel(cfgs []config.RelabelConfig, labels map[string]string) (map[string]string, bool) {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	if !relabelInPlace(cfgs, out) {
		return nil, false
	}
	return out, true
}

// relabelInPlace is Relabel on a map the caller owns.
func relabelInPlace(cfgs []config.RelabelConfig, ls map[string]string) bool {
	for i := range cfgs {
		if !relabelOne(&cfgs[i], ls) {
			return false
		}
	}
	return true
}

// set writes a label; the empty value removes it, as in Prometheus.
func set(ls map[string]string, name, value string) {
	if value == "" {
		delete(ls, name)
		return
	}
	ls[name] = value
}

func relabelOne(c *config.RelabelConfig, ls map[string]string) bool {
	values := make([]string, len(c.SourceLabels))
	for i, name := range c.SourceLabels {
		values[i] = ls[name]
	}
	val := strings.Join(values, c.Separator)
	re := c.Regex.Regexp
	switch c.Action {
	case config.RelabelDrop:
		return !re.MatchString(val)
	case config.RelabelKeep:
		return re.MatchString(val)
	case config.RelabelDropEqual:
		return ls[c.TargetLabel] != val
	case config.RelabelKeepEqual:
		return ls[c.TargetLabel] == val
	case config.RelabelReplace:
		idx := re.FindStringSubmatchIndex(val)
		if idx == nil {
			return true
		}
		target := string(re.ExpandString(nil, c.TargetLabel, val, idx))
		if !validLabelName(target) {
			return true
		}
		set(ls, target, string(re.ExpandString(nil, c.Replacement, val, idx)))
	case config.RelabelLowercase:
		set(ls, c.TargetLabel, strings.ToLower(val))
	case config.RelabelUppercase:
		set(ls, c.TargetLabel, strings.ToUpper(val))
	case config.RelabelHashMod:
		sum := md5.Sum([]byte(val)) //nolint:gosec // see the import
		// The last 8 bytes, as Prometheus takes them, so that a shard
		// split by hashmod here matches one made there.
		set(ls, c.TargetLabel, strconv.FormatUint(binary.BigEndian.Uint64(sum[8:])%c.Modulus, 10))
	case config.RelabelLabelMap:
		for _, name := range slices.Sorted(maps.Keys(ls)) {
			if re.MatchString(name) {
				set(ls, re.ReplaceAllString(name, c.Replacement), ls[name])
			}
		}
	case config.RelabelLabelDrop:
		for name := range ls {
			if re.MatchString(name) {
				delete(ls, name)
			}
		}
	case config.RelabelLabelKeep:
		for name := range ls {
			if !re.MatchString(name) {
				delete(ls, name)
			}
		}
	}
	return true
}

// validLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func validLabelName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		letter := (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
		if !letter && (b < '0' || b > '9') && b != '_' {
			return false
		}
	}
	return true
}
