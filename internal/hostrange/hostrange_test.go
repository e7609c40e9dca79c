package hostrange

import (
	"slices"
	"testing"
)

func TestSort(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{
			"addresses by value",
			[]string{"127.0.2.100", "127.0.2.10", "127.0.2.2", "127.0.2.1"},
			[]string{"127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.100"},
		},
		{
			"ipv4 before ipv6 before names",
			[]string{"web1", "::1", "127.0.0.1"},
			[]string{"127.0.0.1", "::1", "web1"},
		},
		{
			"digit runs as numbers",
			[]string{"web10", "web2", "web1", "db3"},
			[]string{"db3", "web1", "web2", "web10"},
		},
		{
			"several runs",
			[]string{"r10.dc2", "r10.dc10", "r9.dc10"},
			[]string{"r9.dc10", "r10.dc2", "r10.dc10"},
		},
		{
			"padding after value",
			[]string{"web01", "web1", "web001"},
			[]string{"web1", "web01", "web001"},
		},
		{
			"prefix shorter first",
			[]string{"web1a", "web1"},
			[]string{"web1", "web1a"},
		},
		{
			"long digit runs",
			[]string{"h123456789012345678901234567890", "h99"},
			[]string{"h99", "h123456789012345678901234567890"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.Clone(tt.in)
			Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Sort(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCompareIsAnOrder(t *testing.T) {
	hosts := []string{"a", "a1", "a01", "a2", "a10", "b", "127.0.0.1", "127.0.0.2", "::1", "1a", "10a", "", "web01.x", "web1.x"}
	for _, a := range hosts {
		if Compare(a, a) != 0 {
			t.Errorf("Compare(%q, %q) != 0", a, a)
		}
		for _, b := range hosts {
			if Compare(a, b) != -Compare(b, a) {
				t.Errorf("Compare(%q, %q) = %d but Compare(%q, %q) = %d", a, b, Compare(a, b), b, a, Compare(b, a))
			}
			if a != b && Compare(a, b) == 0 {
				t.Errorf("Compare(%q, %q) = 0 for different strings", a, b)
			}
			for _, c := range hosts {
				if Compare(a, b) < 0 && Compare(b, c) < 0 && Compare(a, c) >= 0 {
					t.Errorf("not transitive: %q < %q < %q but Compare(a, c) = %d", a, b, c, Compare(a, c))
				}
			}
		}
	}
}

func TestCompress(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"127.0.1.4", "127.0.1.1", "127.0.1.2"}, "127.0.1.[1-2,4]"},
		{[]string{"web03", "web01", "web02", "db1"}, "db1,web[01-03]"},
		{[]string{"web1", "web01"}, "web1,web01"},
		{[]string{"r1.dc1", "r2.dc1", "r1.dc2"}, "r1.dc[1-2],r2.dc1"},
		{[]string{"gateway", "gateway"}, "gateway"},
		{[]string{"one"}, "one"},
		{[]string{"web7"}, "web7"},
		{[]string{"web09", "web10", "web11"}, "web[09-11]"},
		{[]string{"::1", "::2", "::3"}, "::[1-3]"},
		{[]string{"web10", "web1", "web2"}, "web[1-2,10]"},
		{[]string{"web010", "web9", "web100"}, "web9,web[010,100]"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := Compress(tt.in); got != tt.want {
			t.Errorf("Compress(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
