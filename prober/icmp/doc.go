// Package icmp is the ICMP echo prober. Probes share one socket per address
// family (a "ping socket" where net.ipv4.ping_group_range allows it, a raw
// socket with CAP_NET_RAW otherwise), with one reader matching replies by a
// token in the payload and kernel receive timestamps, instead of pro-bing's
// socket per probe, which costs far more CPU and, with raw sockets, grows
// with the square of the fleet. pro-bing remains the fallback where the
// shared socket cannot be opened.
package icmp
