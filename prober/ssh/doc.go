// Package ssh is the SSH prober. One probe dials TCP under the probe's
// context, performs the handshake with the host key checked against
// known_hosts, authenticates (key, certificate, password or agent) and runs
// the configured commands, timing each phase and hashing each command's
// stdout while it streams, up to a byte limit. Connections can be kept and
// reused between polls. Credentials and known_hosts files are cached and
// re-read when they change on disk; at start, on reload and on each re-read
// they are loaded through internal/fileload, which takes regular files of
// bounded size only, so a FIFO or a device named in the config fails the
// load instead of blocking or exhausting it.
package ssh
