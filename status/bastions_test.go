package status

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

func TestLandingBastions(t *testing.T) {
	render := func(bastions func() []Bastion) string {
		t.Helper()
		h, err := NewHandler(collector.NewStore().Snapshot, Info{Version: "test", Bastions: bastions}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		h.Register(mux)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	body := render(func() []Bastion {
		return []Bastion{
			{Name: "jump@b1:22", Up: true, Connections: 2, Channels: 5, Targets: map[string]int{"web": 3, "db": 2}},
			{Name: "jump@b2:22,ops@b3:22", Targets: map[string]int{"dc2": 40}, LastError: "bastion jump@b2:22,ops@b3:22: hop b3:22: auth: refused"},
		}
	})
	for _, frag := range []string{
		`<h2 id="bastions">Bastions</h2>`,
		`<tr data-bastion="jump@b1:22"><td><code>jump@b1:22</code></td><td class="up">up</td><td class="n">2</td><td class="n">5</td><td class="n">5</td><td><a href="sets/db">db</a>, <a href="sets/web">web</a></td><td></td></tr>`,
		`<td class="down">down</td><td class="n">0</td><td class="n">0</td><td class="n">40</td><td><a href="sets/dc2">dc2</a></td><td>bastion jump@b2:22,ops@b3:22: hop b3:22: auth: refused</td>`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("landing page lacks %q", frag)
		}
	}
	for _, src := range []func() []Bastion{nil, func() []Bastion { return nil }} {
		if body := render(src); strings.Contains(body, "Bastions") {
			t.Error("landing page has a bastion section without bastions")
		}
	}
}
