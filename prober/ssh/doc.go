// Package ssh is the SSH prober. One probe dials TCP under the probe's
// context, performs the handshake with the host key checked against
// known_hosts and the algorithms of the probe's algorithms block (x/crypto's
// secure set by default), authenticates (key, certificate, password,
// keyboard-interactive in any number of rounds, or agent) and runs the
// configured commands, timing each phase. In exec mode each command gets an
// exec session whose stdout is hashed while it streams, up to a byte limit;
// a channel that ends without exit status on a live connection is a
// success, as network devices end theirs. In shell mode all commands are
// typed into one PTY shell, answering pagers, and each one's output is the
// text between its echo and the next prompt. Lines matching a command's
// ignore_lines are left out of the hash. A command past its timeout gets
// the TERM and KILL signal requests, its session closed, and publishes no
// hash.
//
// Connections can be kept and reused between polls. Credentials and
// known_hosts files are cached and re-read when they change on disk; at
// start, on reload and on each re-read they are loaded through
// internal/fileload, which takes regular files of bounded size only, so a
// FIFO or a device named in the config fails the load instead of blocking
// or exhausting it.
package ssh
