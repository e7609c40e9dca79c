// Package netnstest owns the network-namespace harness of the network fault
// tests: two throw-away namespaces joined by a veth pair, a way to run code
// with its sockets inside either of them, nftables rules that drop packets
// (random ICMP loss, blackholes), and a TUN device that answers ICMP echo
// requests after a set delay.
//
// Topology built by New (all addresses are private and exist only inside the
// two namespaces the test created; nothing is configured in the root
// namespace, so no packet of a test can leave the machine):
//
//	client ns                         host ns
//	  lo (up)                           lo (up), AltAddr/32
//	  veth ClientAddr/30  <-------->    veth HostAddr/30
//	  default via HostAddr              ip_forward=1, nft table "inet fx"
//	                                    tun: EchoPrefix routed to it
//
// AddClientAddr gives the client a second address (a multi-homed prober),
// and CountSources counts, in the host's input hook, the ICMP and TCP
// packets from each client address, so a test can tell which address a
// probe left from.
//
// # Running code in a namespace
//
// Go cannot move a whole process into another network namespace, but a
// thread can: InClient and InHost run a function on a fresh goroutine that
// locks itself to its OS thread and setns(2)s that thread into the
// namespace. A socket belongs to the namespace of the thread that created it
// for its whole life, whatever thread later reads or writes it; net.Dialer,
// net.Listen and pro-bing's RunWithContext all create their socket
// synchronously in the calling goroutine, so a prober called synchronously
// from the function probes from inside the namespace. Goroutines the function
// starts run on other threads, still in the root namespace: they may use
// sockets created on the locked thread, but must not create new ones.
//
// The thread is never unlocked: when the goroutine ends, the Go runtime
// terminates the thread instead of reusing it, so no other goroutine ever
// runs in the test namespace. (Since Go 1.10 threads started while a locked
// thread is current are cloned from a clean template thread, so the namespace
// does not leak into new threads either.) Before running the function the
// harness checks that the thread's namespace really is the target's
// (/proc/thread-self/ns/net), so a failed setns can never send test traffic
// out of the root namespace.
//
// Re-executing the test binary under `ip netns exec` would also work but
// needs a subprocess per probe, a way to ship the result back, and cannot
// check goroutine or file descriptor leaks of the code under test; the locked
// thread keeps everything in one process.
package netnstest
