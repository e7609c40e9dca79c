package ssh

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/knownhosts"
)

// CheckFiles loads every private key, certificate, passphrase, password
// and known_hosts file the SSH probes of cfg name, so that a config whose
// credentials are missing or unusable is refused at start and on reload
// (the running config then stays in place) instead of failing every probe
// with reason config. Errors name the set and the file, never its content.
func CheckFiles(cfg *config.Config) error {
	for i := range cfg.HostSets {
		hs := &cfg.HostSets[i]
		s := hs.Probes.SSH
		if s == nil {
			continue
		}
		if key, err := checkLogin(s); err != nil {
			if key == "" {
				return fmt.Errorf("host set %q: %w", hs.Name, err)
			}
			return fmt.Errorf("%s: host set %q: %w", cfg.Where(hs.Name, key), hs.Name, err)
		}
		for j := range s.ProxyJump {
			if _, err := checkLogin(s.ProxyJump[j].Auth()); err != nil {
				return fmt.Errorf("%s: host set %q: proxy_jump[%d] (%s): %w", cfg.Where(hs.Name, "proxy_jump"), hs.Name, j, s.ProxyJump[j].Host, err)
			}
		}
	}
	return nil
}

// checkLogin loads the credential and known_hosts files of an ssh block
// or a proxy_jump hop. On failure it returns the key the error is about,
// for the caller to locate; "" for the agent, which names no file.
func checkLogin(s *config.SSHProbe) (key string, err error) {
	if s.PrivateKeyFile != "" {
		if _, err := loadSigners(s); err != nil {
			// The error names the file it is about.
			key := "private_key_file"
			for _, k := range []string{"passphrase_file", "certificate_file"} {
				if strings.Contains(err.Error(), k) {
					key = k
				}
			}
			return key, err
		}
	}
	if s.PasswordFile != "" {
		if _, err := readSecretFile("password_file", s.PasswordFile); err != nil {
			return "password_file", err
		}
	}
	for _, ki := range s.KeyboardInteractive {
		if _, err := readSecretFile("keyboard_interactive answer_file", ki.AnswerFile); err != nil {
			return "keyboard_interactive", err
		}
	}
	if s.Agent && os.Getenv("SSH_AUTH_SOCK") == "" {
		return "", fmt.Errorf("agent: true but SSH_AUTH_SOCK is not set in the exporter's environment")
	}
	if err := checkKnownHosts(s); err != nil {
		return "known_hosts_file", err
	}
	return "", nil
}

// checkKnownHosts loads the known_hosts file of s. With host_key_policy
// tofu the file may not exist yet (the prober creates it), but then its
// directory must.
func checkKnownHosts(s *config.SSHProbe) error {
	if s.InsecureSkipHostKeyVerification {
		return nil
	}
	if s.HostKeyPolicy == config.HostKeyPolicyTOFU {
		if _, err := os.Lstat(s.KnownHostsFile); errors.Is(err, fs.ErrNotExist) {
			dir := filepath.Dir(s.KnownHostsFile)
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("known_hosts_file %q does not exist and its directory %q cannot hold it (host_key_policy tofu creates the file)", s.KnownHostsFile, dir)
			}
			return nil
		}
	}
	_, err := knownhosts.Load(s.KnownHostsFile)
	return err
}
