package choice

import "testing"

type mode string

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, empty, want, err string
	}{
		{in: "b", want: "b"},
		{in: "  A\t", want: "a"},
		{in: "", empty: "c", want: "c"},
		{in: " ", empty: "c", want: "c"},
		{in: "", err: `unknown mode "": want a, b or c`},
		{in: "d", empty: "c", err: `unknown mode "d": want a, b or c`},
		{in: "a b", err: `unknown mode "a b": want a, b or c`},
	} {
		got, err := Parse("mode", tc.in, mode(tc.empty), "a", "b", "c")
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || got != "" {
				t.Errorf("Parse(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := Parse("x", "q", mode(""), "only"); err == nil || err.Error() != `unknown x "q": want only` {
		t.Errorf("one value: %v", err)
	}
}
