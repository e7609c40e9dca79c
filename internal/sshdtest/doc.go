// Package sshdtest runs a real OpenSSH server for integration tests and
// benchmarks: the Debian sshd binary on a loopback address and a free high
// port, with its own directory holding generated host keys, an sshd_config
// written here, authorized_keys, optional user and host certificate
// authorities, and the server's log. It also generates client keys, signs
// user and host certificates with ssh-keygen and writes known_hosts files in
// plain, hashed and @cert-authority form.
//
// It is the project's one OpenSSH launcher. Tests use Start and the other
// functions taking a testing.TB, which fail or skip the test; programs such
// as bench/sshbench use Launch and the functions returning errors.
//
// Side effects outside the server's directory: when running as root, Launch
// creates /run/sshd (sshd's privilege separation directory) if missing;
// EnsureUser creates a local account (useradd -M -s /bin/sh, no home
// directory) if it does not exist; PasswordUser does that for "fleetprobe"
// and sets a random password on it with chpasswd. That password is kept in a
// root-only file under os.TempDir() so that concurrent test processes agree
// on it; the accounts are left in place. Without root, PasswordUser skips the
// test.
package sshdtest
