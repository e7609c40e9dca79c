package status

import (
	"bytes"
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// masked replaces a secret in the rendered configuration.
const masked = "<secret>"

// MaskedYAML renders cfg, the effective configuration with every default
// filled in, as YAML with secrets replaced by "<secret>": the value of any
// key that names a secret (password, passphrase, secret, token, credentials,
// a key other than a file path), and the password of any URL (shown as xxxxx, as url.URL.Redacted does). Paths of
// secret files are shown: they tell where the secret is, not what it is.
func MaskedYAML(cfg *config.Config) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(cfg); err != nil {
		return nil, err
	}
	maskNode(&root, false)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maskNode masks the secrets under n; secret is true when n is the value of
// a key that names a secret.
func maskNode(n *yaml.Node, secret bool) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			maskNode(c, secret)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			maskNode(n.Content[i+1], secret || secretKey(n.Content[i].Value))
		}
	case yaml.ScalarNode:
		switch {
		case secret && n.Value != "" && n.Tag != "!!bool" && n.Tag != "!!null":
			n.Value, n.Tag, n.Style = masked, "!!str", 0
		default:
			n.Value = maskURL(n.Value)
		}
	}
}

// secretKey reports whether a mapping key names a secret value.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, suffix := range []string{"_file", "_files", "_path", "_dir"} {
		if strings.HasSuffix(k, suffix) {
			return false
		}
	}
	for _, word := range []string{"password", "passphrase", "secret", "token", "credential", "bearer"} {
		if strings.Contains(k, word) {
			return true
		}
	}
	return k == "key" || strings.HasSuffix(k, "_key") || strings.HasSuffix(k, "_keys")
}

// maskURL masks the password of s when s is a URL with one.
func maskURL(s string) string {
	if !strings.Contains(s, "@") || !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	return u.Redacted()
}
