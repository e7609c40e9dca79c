package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// table prints aligned columns for terminal output (--config.check, --once).
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...any) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprint(t.tw, "\n")
}

func (t *table) flush() { _ = t.tw.Flush() }
