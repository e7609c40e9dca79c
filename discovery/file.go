package discovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
)

// fileSource reads every file a file_sd glob matches.
type fileSource struct {
	glob string
}

// read parses every matching file. A glob that matches nothing is a
// failure rather than an empty list: a file deleted by mistake, or a
// directory not mounted, must not remove every target it held.
func (f *fileSource) read(ctx context.Context) ([]Group, error) {
	files, err := filepath.Glob(f.glob)
	if err != nil {
		return nil, &readError{reason: ReasonRead, err: err}
	}
	if len(files) == 0 {
		return nil, &readError{reason: ReasonRead, err: fmt.Errorf("no file matches %s", f.glob)}
	}
	slices.Sort(files)
	var all []Group
	for _, name := range files {
		if err := ctx.Err(); err != nil {
			return nil, &readError{reason: ReasonTimeout, err: err}
		}
		data, err := fileload.Read(name, MaxSourceBytes)
		if err != nil {
			reason := ReasonRead
			if errors.Is(err, fileload.ErrTooLarge) {
				reason = ReasonTooLarge
			}
			return nil, &readError{reason: reason, err: err}
		}
		var groups []Group
		if strings.HasSuffix(name, ".json") {
			groups, err = parseJSON(data)
		} else {
			groups, err = parseYAML(data)
		}
		if err != nil {
			return nil, &readError{reason: ReasonParse, err: &fs.PathError{Op: "read", Path: name, Err: err}}
		}
		for i := range groups {
			groups[i].Labels = withLabel(groups[i].Labels, "__meta_filepath", name)
		}
		all = append(all, groups...)
	}
	return all, nil
}

// dirs are the directories to watch for changes: the glob's directory,
// when it holds no wildcard itself.
func (f *fileSource) dirs() []string {
	d := filepath.Dir(f.glob)
	if strings.ContainsAny(d, `*?[\`) {
		return nil
	}
	return []string{d}
}

// withLabel returns labels with name set, without changing the input.
func withLabel(labels map[string]string, name, value string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out[name] = value
	return out
}
