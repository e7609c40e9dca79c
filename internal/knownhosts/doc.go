// Package knownhosts matches SSH host keys against an OpenSSH known_hosts
// file with the verdicts of golang.org/x/crypto/ssh/knownhosts, but finds a
// host's lines with a map lookup instead of a scan of the whole file, which
// dominated the client CPU of a fleet-sized known_hosts file. It also orders
// the host key algorithms a client should ask for, so that a server is asked
// for a key type the file actually lists. The file is read once, through
// internal/fileload, and both the index and the x/crypto callback are built
// from those bytes.
package knownhosts
