package sshkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Key is a generated key pair: the private key, its SSH signer and its
// public key.
type Key struct {
	Priv   crypto.Signer
	Signer ssh.Signer
	Pub    ssh.PublicKey
}

// Generate generates a key of kind "ed25519", "ecdsa" or "rsa".
func Generate(t testing.TB, kind string) Key {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch kind {
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	signer, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	return Key{Priv: priv, Signer: signer, Pub: signer.PublicKey()}
}

// OpenSSH encodes k in the OpenSSH private key format, encrypted when
// passphrase is set.
func OpenSSH(t testing.TB, k Key, passphrase string) []byte {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(k.Priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(k.Priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatalf("marshal private key: %v", err)
	}
	return pem.EncodeToMemory(block)
}

// LegacyPEM encodes k the pre-OpenSSH way: PKCS#1 for RSA, SEC 1 for
// ECDSA, PKCS#8 for Ed25519.
func LegacyPEM(t testing.TB, k Key) []byte {
	t.Helper()
	var block *pem.Block
	switch priv := k.Priv.(type) {
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(block)
}

// SignCert signs a certificate for pub with ca.
func SignCert(t testing.TB, ca Key, pub ssh.PublicKey, certType uint32, principals ...string) *ssh.Certificate {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        certType,
		KeyId:           "test",
		ValidPrincipals: principals,
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatalf("sign certificate: %v", err)
	}
	return cert
}
