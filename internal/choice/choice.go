// Package choice parses the string enums of flags and configuration
// (--exec-transport, --recording, --exit-notice) one way.
package choice

import (
	"fmt"
	"slices"
	"strings"
)

// Parse returns the value of valid that s names, ignoring case and
// surrounding space. An empty s gives empty unless that is "" too; anything
// else is an error that names what and lists valid.
func Parse[T ~string](what, s string, empty T, valid ...T) (T, error) {
	v := T(strings.ToLower(strings.TrimSpace(s)))
	if v == "" && empty != "" {
		return empty, nil
	}
	if slices.Contains(valid, v) {
		return v, nil
	}
	names := make([]string, len(valid))
	for i, x := range valid {
		names[i] = string(x)
	}
	want := names[len(names)-1]
	if len(names) > 1 {
		want = strings.Join(names[:len(names)-1], ", ") + " or " + want
	}
	return "", fmt.Errorf("unknown %s %q: want %s", what, s, want)
}
