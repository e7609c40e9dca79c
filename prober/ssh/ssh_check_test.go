package ssh

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

func TestSSHCheckFiles(t *testing.T) {
	dir := t.TempDir()
	k := sshkeys.Generate(t, "ed25519")
	key := writeFile(t, dir, "id", sshkeys.OpenSSH(t, k, ""))
	kh := writeFile(t, dir, "known_hosts", []byte("127.0.0.1 "+string(ssh.MarshalAuthorizedKey(k.Pub))))
	pw := writeFile(t, dir, "pw", []byte("s3cret-planted\n"))
	garbage := writeFile(t, dir, "garbage", []byte("not a key s3cret-planted"))
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
		{name: "tofu file not created yet", probe: config.SSHProbe{PrivateKeyFile: key, KnownHostsFile: missing, HostKeyPolicy: config.HostKeyPolicyTOFU}},
		{
			name: "tofu file in a missing directory", probe: config.SSHProbe{PrivateKeyFile: key, KnownHostsFile: filepath.Join(missing, "kh"), HostKeyPolicy: config.HostKeyPolicyTOFU},
			wantErr: []string{"known_hosts_file", "host_key_policy tofu"},
		},
		{name: "tofu file garbage", probe: config.SSHProbe{PrivateKeyFile: key, KnownHostsFile: garbage, HostKeyPolicy: config.HostKeyPolicyTOFU}, wantErr: []string{"known_hosts_file", garbage}},
		{
			name: "hop key vanished", probe: config.SSHProbe{
				PrivateKeyFile: key, KnownHostsFile: kh,
				ProxyJump: []config.ProxyJump{{Host: "jump1", PrivateKeyFile: missing, KnownHostsFile: kh}},
			},
			wantErr: []string{`host set "s"`, "proxy_jump[0] (jump1)", "private_key_file", missing},
		},
		{
			name: "hop known_hosts garbage", probe: config.SSHProbe{
				PrivateKeyFile: key, KnownHostsFile: kh,
				ProxyJump: []config.ProxyJump{{Host: "jump1", PrivateKeyFile: key, KnownHostsFile: kh}, {Host: "jump2", PrivateKeyFile: key, KnownHostsFile: garbage}},
			},
			wantErr: []string{"proxy_jump[1] (jump2)", garbage},
		},
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
