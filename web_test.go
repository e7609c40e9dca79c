package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// webSelfSigned writes a self-signed certificate for 127.0.0.1 and returns
// the cert and key paths and a pool that trusts it.
func webSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fleet_exporter test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, "server.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, "server.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestWebConfigTLSAndBasicAuth serves through --web.config.file and talks to
// it with a real TLS client.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := webSelfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := writeFile(t, dir, "web.yml", "tls_server_config:\n  cert_file: "+filepath.Base(certFile)+
		"\n  key_file: "+filepath.Base(keyFile)+"\nbasic_auth_users:\n  prom: "+string(hash)+"\n")

	port := testutil.FreePort(t, "127.0.0.1")
	d := &daemon{}
	d.addr = fmt.Sprintf("127.0.0.1:%d", port)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	startDaemonWith(t, d, []string{"--web.listen-address=" + d.addr, "--web.config.file=" + webCfg}, func() bool {
		resp, err := client.Get("https://" + d.addr + "/-/healthy")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusOK
	})

	get := func(c *http.Client, url, user, pass string) (int, string, error) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	metricsURL := "https://" + d.addr + "/metrics"

	if code, _, err := get(client, metricsURL, "prom", "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d %v, want 401", code, err)
	}
	if code, _, err := get(client, metricsURL, "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d %v, want 401", code, err)
	}
	code, body, err := get(client, metricsURL, "prom", "correct horse")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "fleet_targets{") {
		t.Errorf("correct credentials: %d %v, want 200 with metrics", code, err)
	}
	// Plain HTTP to the TLS port must not get metrics.
	plain := &http.Client{Timeout: 5 * time.Second}
	code, body, err = get(plain, "http://"+d.addr+"/metrics", "prom", "correct horse")
	if err == nil && (code == http.StatusOK || strings.Contains(body, "fleet_targets")) {
		t.Errorf("plain HTTP to the TLS port answered %d with metrics", code)
	}
	// A client that does not trust the certificate fails the handshake.
	untrusting := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	if _, _, err := get(untrusting, metricsURL, "prom", "correct horse"); err == nil {
		t.Error("a client without the CA completed the TLS handshake")
	}
	client.CloseIdleConnections()
}
