package bastion

import (
	"os"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
)

// sshdHop returns a hop to the real sshd s with a client key it accepts.
func sshdHop(t *testing.T, s *sshdtest.Server, name string) Hop {
	t.Helper()
	k := s.ClientKey(t, name, sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	pem, err := os.ReadFile(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := os.ReadFile(s.HostKeys[0].Public)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	return Hop{Addr: s.HostPort(), Config: &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(pub),
		HostKeyAlgorithms: []string{pub.Type()},
	}}
}

// TestOpenSSHBastion reaches many targets through a real OpenSSH sshd used
// as a jump host, over two hops, and counts the bastion logins in its log:
// they equal Connections, not the number of targets.
func TestOpenSSHBastion(t *testing.T) {
	sshdtest.RequireOpenSSH(t)
	first := sshdtest.Start(t, sshdtest.Options{AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	second := sshdtest.Start(t, sshdtest.Options{Addr: "127.0.0.2", AllowTCPForwarding: true, HostKeyTypes: []string{sshdtest.KeyEd25519}})
	echo := startEcho(t)

	b := newBastion(t, Options{
		Hops:        []Hop{sshdHop(t, first, "id_first"), sshdHop(t, second, "id_second")},
		Connections: 2,
		Concurrency: 8,
	})
	roundTrips(t, b, echo, 60)
	if got := b.Stats().Connects[ResultSuccess]; got > 2 {
		t.Errorf("%d connections for 60 targets, want at most 2", got)
	}
	// sshd logs a login once it is done with it; wait for the ones made.
	want := int(b.Stats().Connects[ResultSuccess])
	first.WaitLog(t, 10*time.Second, func(string) bool { return first.PublicKeyLogins(t) >= want })
	if got := first.PublicKeyLogins(t); got != want {
		t.Errorf("first hop logged %d logins, want %d", got, want)
	}
	if got := second.PublicKeyLogins(t); got != want {
		t.Errorf("second hop logged %d logins, want %d", got, want)
	}
}
