package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
)

func TestSSHCheckFiles(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte("127.0.0.1 "+string(ssh.MarshalAuthorizedKey(sshPub))), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret-planted\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key s3cret-planted"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name    string
		probe   config.SSHProbe
		wantErr []string
	}{
		{name: "all good", probe: config.SSHProbe{PrivateKeyFile: key, PasswordFile: pw, KnownHostsFile: kh}},
		{name: "insecure needs no known_hosts", probe: config.SSHProbe{PrivateKeyFile: key, InsecureSkipHostKeyVerification: true}},
		{name: "key vanished", probe: config.SSHProbe{PrivateKeyFile: missing, KnownHostsFile: kh}, wantErr: []string{`host set "s"`, "private_key_file", missing}},
		{name: "key garbage", probe: config.SSHProbe{PrivateKeyFile: garbage, KnownHostsFile: kh}, wantErr: []string{`host set "s"`, garbage}},
		{name: "password vanished", probe: config.SSHProbe{PasswordFile: missing, KnownHostsFile: kh}, wantErr: []string{"password_file", missing}},
		{name: "known_hosts vanished", probe: config.SSHProbe{PrivateKeyFile: key, KnownHostsFile: missing}, wantErr: []string{"known_hosts_file", missing}},
	}
	tests = append(tests, struct {
		name    string
		probe   config.SSHProbe
		wantErr []string
	}{name: "agent without SSH_AUTH_SOCK", probe: config.SSHProbe{Agent: true, KnownHostsFile: kh}, wantErr: []string{`host set "s"`, "SSH_AUTH_SOCK"}})
	t.Setenv("SSH_AUTH_SOCK", "")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.probe
			cfg := &config.Config{HostSets: []config.HostSet{
				{Name: "icmp-only", Probes: config.Probes{ICMP: &config.ICMPProbe{}}},
				{Name: "s", Probes: config.Probes{SSH: &p}},
			}}
			err := CheckFiles(cfg)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret-planted") {
				t.Errorf("error %q leaks file content", err)
			}
		})
	}
}
