// Package status owns the exporter's own HTML pages: the landing page with a
// per-set summary of up, down and failing hosts, and a page per host set with
// a compact grid of every host coloured by state. Pages are rendered on the
// server with html/template from one store snapshot per request; they load no
// external assets, so they work on an isolated network.
package status
