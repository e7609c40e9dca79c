// Package preflight is the one check a configuration passes before it runs:
// expansion into targets, the files it names (keys, passwords, known_hosts),
// and the warnings an operator must see about a valid but risky config
// (pool capacity, disabled host key verification, open key permissions).
// Start, reload and --config.check all call Check, so --config.check prints
// exactly the warnings a start logs.
package preflight
