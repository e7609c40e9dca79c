package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// Credentials must never show up in logs (debug level included), metrics,
// status pages, --once output, --config.check output or reload errors,
// whatever fails. The SSH peer is the kit's in-process server with no
// credentials at all: it rejects every login and records the passwords it is
// offered, which proves that the probe really used (and could have leaked)
// the planted secret.

// secretSSHUser is the user the probes log in as.
const secretSSHUser = sshserver.DefaultUser

// secretValue returns a random string that cannot occur by chance in any
// output.
func secretValue(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// secretFixture is a config with an encrypted key, a passphrase file and a
// password file, for one host that rejects every login and one that refuses
// connections.
type secretFixture struct {
	dir                  string
	srv                  *sshserver.TestServer
	password, passphrase string
	// keyLine is a line of the encrypted key's body: key material.
	keyLine string
	keyFile string
	// config writes a config file using passphraseFile and returns its path.
	config func(name, passphraseFile string) string
	// passphraseFile holds the right passphrase.
	passphraseFile string
}

func secretNewFixture(t *testing.T) *secretFixture {
	t.Helper()
	f := &secretFixture{
		dir:        t.TempDir(),
		password:   secretValue(t, "password"),
		passphrase: secretValue(t, "passphrase"),
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	host, err := ssh.NewSignerFromSigner(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{host}})
	refused := testutil.FreePort(t, "127.0.0.1")

	_, userPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(userPriv, "secret test key", []byte(f.passphrase))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	f.keyLine = strings.Split(string(keyPEM), "\n")[2]
	// Readable by others on purpose: the daemon must warn about it.
	f.keyFile = writeFile(t, f.dir, "id_ed25519", string(keyPEM))
	if err := os.Chmod(f.keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	f.passphraseFile = writeFile(t, f.dir, "passphrase", f.passphrase+"\n")
	passwordFile := writeFile(t, f.dir, "password", f.password+"\n")
	hostport := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.srv.Port))
	known := writeFile(t, f.dir, "known_hosts",
		knownhosts.Line([]string{knownhosts.Normalize(hostport)}, host.PublicKey())+"\n")

	f.config = func(name, passphraseFile string) string {
		return writeFile(t, f.dir, name, fmt.Sprintf(`
global:
  # Decrypting the bcrypt-protected key takes seconds under the race
  # detector, over 10s on a loaded machine: a short timeout would fail
  # the probe before it reaches authentication.
  interval: 30s
  timeout: 30s
host_sets:
  - name: secrets
    hosts: ["%s", "127.0.0.1:%d"]
    probes:
      ssh:
        user: %s
        private_key_file: %s
        passphrase_file: %s
        password_file: %s
        known_hosts_file: %s
        commands:
          - name: check
            run: "echo hi"
`, hostport, refused, secretSSHUser, f.keyFile, passphraseFile, passwordFile, known))
	}
	return f
}

// secretCheck fails the test if out contains any of the secrets.
func secretCheck(t *testing.T, where, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s contains the secret %q:\n%s", where, s, out)
		}
	}
}

func TestSecretsNeverLeak(t *testing.T) {
	f := secretNewFixture(t)
	secrets := []string{f.password, f.passphrase, f.keyLine}
	cfgFile := f.config("fleet.yml", f.passphraseFile)

	t.Run("daemon", func(t *testing.T) {
		d := startDaemon(t, "--config.file="+cfgFile, "--log.level=debug")
		base := "http://" + d.addr
		// Wait for both failures: the login rejected after the key and the
		// password were offered, and the refused connection.
		waitFor(t, 60*time.Second, func() bool {
			_, body := httpDo(t, "GET", base+"/metrics")
			return strings.Contains(body, `reason="auth"`) && strings.Contains(body, `reason="refused"`)
		})
		pws, keys := f.srv.Offered()
		if len(pws) == 0 || pws[0] != f.password || keys == 0 {
			t.Fatalf("the server was offered %d passwords (want the planted one) and %d keys: the secrets were not in play", len(pws), keys)
		}

		pages := map[string]string{}
		for _, path := range []string{"/metrics", "/", "/sets/secrets"} {
			code, body := httpDo(t, "GET", base+path)
			if code != 200 {
				t.Errorf("GET %s: %d", path, code)
			}
			pages[path] = body
		}
		if !strings.Contains(pages["/sets/secrets"], "auth") {
			t.Errorf("the set page does not show the auth failure:\n%s", pages["/sets/secrets"])
		}
		// A reload that fails on the key still says why, not what.
		badCfg := f.config("bad.yml", writeFile(t, f.dir, "wrong-passphrase", secretValue(t, "wrong")+"\n"))
		if err := os.Rename(badCfg, cfgFile); err != nil {
			t.Fatal(err)
		}
		code, body := httpDo(t, "POST", base+"/-/reload")
		if code != 500 || !strings.Contains(body, "passphrase") {
			t.Errorf("reload with a wrong passphrase: %d %q, want 500 naming the passphrase", code, body)
		}
		pages["POST /-/reload"] = body
		// Every page shows the failed reload, and /config the running
		// configuration: neither may show a secret.
		for _, path := range []string{"/", "/config"} {
			code, body := httpDo(t, "GET", base+path)
			if code != 200 || !strings.Contains(body, `id="reload-failed"`) || !strings.Contains(body, "passphrase") {
				t.Errorf("GET %s after the failed reload: %d, no reload failure naming the passphrase:\n%s", path, code, body)
			}
			pages[path+" after the failed reload"] = body
		}
		if !strings.Contains(pages["/config after the failed reload"], "passphrase_file:") {
			t.Errorf("/config does not show the running configuration:\n%s", pages["/config after the failed reload"])
		}
		for where, body := range pages {
			secretCheck(t, where, body, secrets...)
		}

		logs := d.stderr.String()
		if !strings.Contains(logs, "level=DEBUG") {
			t.Errorf("no debug lines in the log; was --log.level=debug applied?\n%s", logs)
		}
		secretCheck(t, "the daemon log", logs, secrets...)
		warned := false
		for line := range strings.SplitSeq(logs, "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, f.keyFile) {
				warned = true
			}
		}
		if !warned {
			t.Errorf("no warning naming the world-readable key file %s:\n%s", f.keyFile, logs)
		}
	})

	wrong := secretValue(t, "wrong")
	wrongCfg := f.config("wrong.yml", writeFile(t, f.dir, "wrong-passphrase-2", wrong+"\n"))
	secrets = append(secrets, wrong)
	tests := []struct {
		name string
		args []string
		want int
		// check inspects stdout and stderr beyond the secret check.
		check func(t *testing.T, stdout, stderr string)
	}{
		{
			"once json",
			[]string{"--once", "--once.format=json", "--log.level=debug", "--config.file=" + f.config("once.yml", f.passphraseFile)},
			1,
			func(t *testing.T, stdout, _ string) {
				var rows []map[string]any
				if err := json.Unmarshal([]byte(stdout), &rows); err != nil || len(rows) != 2 {
					t.Fatalf("want 2 JSON results, got %v: %s", err, stdout)
				}
				reasons := map[any]bool{rows[0]["reason"]: true, rows[1]["reason"]: true}
				if !reasons["auth"] || !reasons["refused"] {
					t.Errorf("reasons %v, want auth and refused", reasons)
				}
			},
		},
		{
			"once table",
			[]string{"--once", "--log.level=debug", "--config.file=" + f.config("once.yml", f.passphraseFile)},
			1,
			func(t *testing.T, stdout, _ string) {
				if !strings.Contains(stdout, "auth") || !strings.Contains(stdout, "refused") {
					t.Errorf("table lacks the auth and refused failures:\n%s", stdout)
				}
			},
		},
		{
			"config check",
			[]string{"--config.check", "--log.level=debug", "--config.file=" + f.config("check.yml", f.passphraseFile)},
			0,
			func(t *testing.T, stdout, _ string) {
				if !strings.Contains(stdout, "is valid") {
					t.Errorf("stdout %q does not say the config is valid", stdout)
				}
			},
		},
		{
			"config check with a wrong passphrase",
			[]string{"--config.check", "--log.level=debug", "--config.file=" + wrongCfg},
			1,
			func(t *testing.T, _, stderr string) {
				if !strings.Contains(stderr, "passphrase") || !strings.Contains(stderr, f.keyFile) {
					t.Errorf("stderr %q does not name the key file and the passphrase", stderr)
				}
			},
		},
		{
			"daemon with a wrong passphrase",
			[]string{"--log.level=debug", "--web.listen-address=127.0.0.1:0", "--config.file=" + wrongCfg},
			1,
			func(t *testing.T, _, stderr string) {
				if !strings.Contains(stderr, "passphrase") {
					t.Errorf("stderr %q does not say the passphrase is wrong", stderr)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			if code := runContext(ctx, tc.args, &stdout, &stderr); code != tc.want {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, tc.want, stdout.String(), stderr.String())
			}
			secretCheck(t, "stdout", stdout.String(), secrets...)
			secretCheck(t, "stderr", stderr.String(), secrets...)
			if tc.check != nil {
				tc.check(t, stdout.String(), stderr.String())
			}
		})
	}
}

// TestSecretsNeverLeakNewerFields plants a unique secret in each
// secret-bearing setting the first test does not cover: a proxy_jump hop's
// encrypted key, its passphrase file and keyboard_interactive answer file,
// an ssh block's keyboard_interactive answer file, an http_sd password
// file, inline credentials and URL password, and the --cluster.secret-file
// key. The peers reject every login and the second http_sd request, and
// record what they were offered, so each secret is really in play; none
// may appear in the daemon's logs (debug included), metrics, pages,
// /config, a failed reload's answer or --config.check output.
func TestSecretsNeverLeakNewerFields(t *testing.T) {
	dir := t.TempDir()
	hopPassphrase, hopAnswer, kiAnswer := secretValue(t, "hoppassphrase"), secretValue(t, "hopanswer"), secretValue(t, "kianswer")
	sdPassword, sdToken, urlPassword := secretValue(t, "sdpassword"), secretValue(t, "sdtoken"), secretValue(t, "urlpassword")
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	clusterKey := base64.StdEncoding.EncodeToString(raw)

	signer := func() ssh.Signer {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.NewSignerFromSigner(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	bastionKey, kiKey := signer(), signer()
	bastion := testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{bastionKey}, KeyboardInteractive: true})
	kiServer := testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: []ssh.Signer{kiKey}, KeyboardInteractive: true})
	writeFile(t, dir, "known_hosts",
		knownhosts.Line([]string{knownhosts.Normalize(bastion.HostPort())}, bastionKey.PublicKey())+"\n"+
			knownhosts.Line([]string{knownhosts.Normalize(kiServer.HostPort())}, kiKey.PublicKey())+"\n")
	_, hopPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(hopPriv, "hop key", []byte(hopPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	hopPEM := string(pem.EncodeToMemory(block))
	hopKeyLine := strings.Split(hopPEM, "\n")[2]
	writeFile(t, dir, "hop_key", hopPEM)
	writeFile(t, dir, "hop_passphrase", hopPassphrase+"\n")
	writeFile(t, dir, "hop_answer", hopAnswer+"\n")
	writeFile(t, dir, "ki_answer", kiAnswer+"\n")
	writeFile(t, dir, "sd_password", sdPassword+"\n")
	clusterKeyFile := writeFile(t, dir, "cluster.key", clusterKey+"\n")

	var sdPasswordUsed, sdTokenUsed, urlPasswordUsed atomic.Bool
	refused := testutil.FreePort(t, "127.0.0.1")
	sd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+sdToken {
			sdTokenUsed.Store(true)
		}
		if _, p, ok := r.BasicAuth(); ok && p == urlPassword {
			urlPasswordUsed.Store(true)
		}
		if u, p, ok := r.BasicAuth(); !ok || u != "sd" || p != sdPassword || r.URL.Path != "/ok" {
			http.Error(w, "denied", http.StatusUnauthorized)
			return
		}
		sdPasswordUsed.Store(true)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `[{"targets": ["127.0.0.1:%d"]}]`, refused)
	}))
	defer sd.Close()
	sdHost := strings.TrimPrefix(sd.URL, "http://")

	config := func(name, hopPassphraseFile string) string {
		return writeFile(t, dir, name, fmt.Sprintf(`
global: {interval: 30s, timeout: 30s}
host_sets:
  - name: jump
    hosts: ["127.0.0.1:%d"]
    probes:
      ssh:
        user: %[2]s
        insecure_skip_host_key_verification: true
        keyboard_interactive: [{prompt: "(?i)password", answer_file: ki_answer}]
        proxy_jump:
          - host: %[3]s
            user: %[2]s
            private_key_file: hop_key
            passphrase_file: %[4]s
            keyboard_interactive: [{prompt: "(?i)password", answer_file: hop_answer}]
            known_hosts_file: known_hosts
        commands: [{name: check, run: "echo hi"}]
  - name: ki
    hosts: ["%[5]s"]
    probes:
      ssh:
        user: %[2]s
        keyboard_interactive: [{prompt: "(?i)password", answer_file: ki_answer}]
        known_hosts_file: known_hosts
        commands: [{name: check, run: "echo hi"}]
  - name: sd
    http_sd:
      - url: %[6]s/ok
        basic_auth: {username: sd, password_file: sd_password}
      - url: %[6]s/token
        authorization: {credentials: %[9]s}
      - url: http://monitor:%[7]s@%[8]s/userinfo
    probes:
      tcp: {}
`, refused, secretSSHUser, bastion.HostPort(), hopPassphraseFile, kiServer.HostPort(), sd.URL, urlPassword, sdHost, sdToken))
	}
	cfgFile := config("fleet.yml", "hop_passphrase")
	secrets := []string{hopPassphrase, hopKeyLine, hopAnswer, kiAnswer, sdPassword, sdToken, urlPassword, clusterKey}
	offered := func(srv *sshserver.TestServer, want string) bool {
		pws, _ := srv.Offered()
		return slices.Contains(pws, want)
	}

	gossip := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	d := startDaemon(t, "--config.file="+cfgFile, "--log.level=debug", "--cluster.listen-address="+gossip,
		"--cluster.name=secrets-0", "--cluster.secret-file="+clusterKeyFile)
	base := "http://" + d.addr
	inPlay := func() bool {
		return offered(bastion, hopAnswer) && offered(kiServer, kiAnswer) && sdPasswordUsed.Load() && sdTokenUsed.Load() && urlPasswordUsed.Load()
	}
	deadline := time.Now().Add(90 * time.Second)
	for !inPlay() {
		if time.Now().After(deadline) {
			t.Fatalf("secrets not all in play after 90s: hop answer %v, ssh answer %v, http_sd password %v, token %v, URL password %v\n%s",
				offered(bastion, hopAnswer), offered(kiServer, kiAnswer), sdPasswordUsed.Load(), sdTokenUsed.Load(), urlPasswordUsed.Load(), d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, keys := bastion.Offered(); keys == 0 {
		t.Error("the bastion was offered no key: the hop's passphrase was not in play")
	}
	pages := map[string]string{}
	for _, path := range []string{"/metrics", "/", "/sets/jump", "/sets/ki", "/sets/sd", "/config", "/cluster"} {
		code, body := httpDo(t, "GET", base+path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d", path, code)
		}
		pages[path] = body
	}
	if !strings.Contains(pages["/metrics"], `fleet_discovery_targets{set="sd",source="http_sd:`+sd.URL+`/ok"} 1`) {
		t.Errorf("the http_sd source with the password file was not read:\n%s", pages["/metrics"])
	}
	// A reload that fails on the hop's key says why, not what.
	wrong := secretValue(t, "wrong")
	secrets = append(secrets, wrong)
	writeFile(t, dir, "wrong_passphrase", wrong+"\n")
	if err := os.Rename(config("bad.yml", "wrong_passphrase"), cfgFile); err != nil {
		t.Fatal(err)
	}
	code, body := httpDo(t, "POST", base+"/-/reload")
	if code != http.StatusInternalServerError || !strings.Contains(body, "passphrase") {
		t.Errorf("reload with a wrong hop passphrase: %d %q, want 500 naming the passphrase", code, body)
	}
	pages["POST /-/reload"] = body
	for _, path := range []string{"/", "/config"} {
		_, body := httpDo(t, "GET", base+path)
		pages[path+" after the failed reload"] = body
	}
	for where, body := range pages {
		secretCheck(t, where, body, secrets...)
	}
	logs := d.stderr.String()
	if !strings.Contains(logs, "level=DEBUG") {
		t.Errorf("no debug lines in the log; was --log.level=debug applied?\n%s", logs)
	}
	secretCheck(t, "the daemon log", logs, secrets...)

	for _, cfg := range []string{config("check.yml", "hop_passphrase"), config("check-bad.yml", "wrong_passphrase")} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := []string{
			"--config.check", "--log.level=debug", "--config.file=" + cfg,
			"--cluster.listen-address=" + gossip, "--cluster.name=secrets-0", "--cluster.secret-file=" + clusterKeyFile,
		}
		code := runContext(ctx, args, &stdout, &stderr)
		cancel()
		if code == 2 {
			t.Errorf("--config.check with %s: exit 2: %s", cfg, stderr.String())
		}
		secretCheck(t, "--config.check stdout", stdout.String(), secrets...)
		secretCheck(t, "--config.check stderr", stderr.String(), secrets...)
	}
}
