// Package bastion reaches hosts through SSH jump hosts the way OpenSSH's
// ProxyJump does, without a login per target: a Bastion keeps a few
// authenticated connections through its chain of hops and opens one
// direct-tcpip channel on them per target connection.
//
// Channels in flight and channel opens per second are bounded, so thousands
// of targets behind one bastion never exceed its MaxStartups or channel
// limits. A hop that cannot be reached, or refuses the handshake, the host
// key or the login, fails every dial through it at once with a *HopError
// naming the hop, and is retried with exponential backoff instead of once
// per target.
package bastion
