package hmactest

import "testing"

func TestNewKey(t *testing.T) {
	a, b := NewKey(t), NewKey(t)
	if len(a) != 44 || string(a) == string(b) {
		t.Errorf("keys %q %q", a, b)
	}
}
