// Command icmpbench measures ICMP probing at scale on loopback: the
// exporter's probing pipeline (scheduler, pool, shared-socket icmp.Prober)
// against fping and smokeping_prober at the same packet rate. Every target
// is an address in 127.0.0.0/8; nothing leaves the host.
//
// Subcommands, each printing one JSON line per measurement:
//
//	engine     run the exporter's pipeline in this process
//	fping      run fping -c over the same targets as a child
//	smokeping  run prometheus-smokeping-prober over the same targets
//	suite      run the whole matrix (each measurement in a fresh process)
//	report     turn suite JSON lines into a Markdown table of medians
//
// bench/icmp.sh runs the suite in both socket modes and writes the report.
package main
