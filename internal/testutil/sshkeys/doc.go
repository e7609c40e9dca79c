// Package sshkeys generates SSH keys and certificates for tests, so that
// no key material is committed and every test gets fresh keys.
package sshkeys
