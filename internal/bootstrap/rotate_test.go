package bootstrap

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestKeyNameRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 15, 0, 0, time.FixedZone("CET", 3600))
	name := KeyName(at)
	if name != "key-20261202T021500Z" {
		t.Fatalf("KeyName = %q", name)
	}
	got, ok := KeyCreated(name)
	if !ok || !got.Equal(at) {
		t.Fatalf("KeyCreated(%q) = %v, %v", name, got, ok)
	}
	for _, other := range []string{"key", "key-", "key-2026", "mykey-20261202T021500Z", "key-20261302T021500Z"} {
		if _, ok := KeyCreated(other); ok {
			t.Errorf("KeyCreated(%q) found a time", other)
		}
	}
}

func TestPrunable(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const prop, ttl, leeway = 2 * time.Minute, 5 * time.Minute, 30 * time.Second
	window := time.Second + prop + ttl + leeway // from the end of the named second
	k := func(d time.Duration) string { return KeyName(t0.Add(d)) }
	for _, tc := range []struct {
		name  string
		keys  []string
		now   time.Time
		prune []string
	}{
		{"two keys always stay", []string{"key", k(0)}, t0.Add(time.Hour), nil},
		{"successor too young", []string{"key", k(0), k(time.Second)}, t0.Add(window - time.Second), nil},
		{"successor old enough", []string{"key", k(0), k(time.Second)}, t0.Add(window), []string{"key"}},
		{"several old ones", []string{k(time.Second), "key", k(0), k(2 * time.Second), k(3 * time.Second)}, t0.Add(time.Hour), []string{"key", k(0), k(time.Second)}},
		{"untimed successor keeps its predecessor", []string{"a", "b", k(0)}, t0.Add(time.Hour), nil},
	} {
		got := Prunable(tc.keys, tc.now, prop, ttl, leeway)
		if !slices.Equal(got, tc.prune) {
			t.Errorf("%s: Prunable = %v, want %v", tc.name, got, tc.prune)
		}
	}
}

// TestRotateKeepsThenPrunes walks the migration from the bootstrap's first
// key through two rotations: each adds a key named after its time, keeps the
// previous, and the third prunes what no token can still carry.
func TestRotateKeepsThenPrunes(t *testing.T) {
	first := bytes.Repeat([]byte{7}, KeyBytes)
	c := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns},
		Data:       map[string][]byte{"key": first},
	})
	var buf bytes.Buffer
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	opts := RotateOptions{Options: testOpts(&buf), MaxTTL: 5 * time.Minute, Leeway: 30 * time.Second, PropagationDelay: 2 * time.Minute, Now: func() time.Time { return now }}
	window := time.Second + opts.MaxTTL + opts.Leeway + opts.PropagationDelay
	rotate := func() RotateResult {
		t.Helper()
		r, err := RotateSecret(context.Background(), typed{c.CoreV1()}, opts)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := rotate()
	if r.Added != KeyName(t0) || !slices.Equal(r.Kept, []string{"key"}) || len(r.Pruned) != 0 {
		t.Fatalf("first rotation: %+v", r)
	}
	s := getSecret(t, c, DefaultSecretName)
	if !bytes.Equal(s.Data["key"], first) || len(s.Data[KeyName(t0)]) != KeyBytes {
		t.Fatalf("first rotation left data keys %v", sortedKeys(s.Data))
	}

	now = t0.Add(time.Minute)
	r = rotate()
	if !slices.Equal(r.Kept, []string{"key", KeyName(t0)}) || len(r.Pruned) != 0 {
		t.Fatalf("second rotation within the window: %+v", r)
	}
	// Rotating twice in one second is refused rather than overwriting.
	if _, err := RotateSecret(context.Background(), typed{c.CoreV1()}, opts); KindOf(err) != Invalid {
		t.Fatalf("rotation in the same second: %v", err)
	}

	now = t0.Add(time.Minute + window)
	r = rotate()
	want := []string{"key", KeyName(t0)}
	if !slices.Equal(r.Pruned, want) || !slices.Equal(r.Kept, []string{KeyName(t0.Add(time.Minute))}) {
		t.Fatalf("third rotation: %+v, want pruned %v", r, want)
	}
	if got := sortedKeys(getSecret(t, c, DefaultSecretName).Data); !slices.Equal(got, []string{KeyName(t0.Add(time.Minute)), KeyName(now)}) {
		t.Fatalf("Secret holds %v", got)
	}
	if bytes.Contains(buf.Bytes(), first) {
		t.Fatal("key material in the log")
	}
}

func TestRotateCreatesAbsentSecret(t *testing.T) {
	c := fake.NewClientset()
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := RotateSecret(context.Background(), typed{c.CoreV1()}, RotateOptions{Options: testOpts(&buf), MaxTTL: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(getSecret(t, c, DefaultSecretName).Data); !slices.Equal(got, []string{KeyName(now)}) || r.Added != KeyName(now) {
		t.Fatalf("created %v (%+v)", got, r)
	}
}

func TestSelectSigningKey(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, KeyBytes), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The kubelet's own entries are never keys.
	if err := os.Mkdir(filepath.Join(dir, "..2026_01_01_00_00_00.1"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(KeyName(t0))
	const delay = 2 * time.Minute
	// A name's age counts from the end of the second it records.
	usable := delay + time.Second
	for _, tc := range []struct {
		setup    string
		now      time.Time
		want     string
		fallback bool
	}{
		{"", t0.Add(time.Minute), KeyName(t0), true},
		{"key", t0.Add(time.Minute), "key", false},
		{"", t0.Add(usable - time.Millisecond), "key", false},
		{"", t0.Add(usable), KeyName(t0), false},
		{KeyName(t0.Add(time.Minute)), t0.Add(usable + time.Minute - time.Millisecond), KeyName(t0), false},
		{"", t0.Add(usable + time.Minute), KeyName(t0.Add(time.Minute)), false},
	} {
		if tc.setup != "" {
			write(tc.setup)
		}
		got, fb, err := SelectSigningKey(dir, tc.now, delay)
		if err != nil || got != tc.want || fb != tc.fallback {
			t.Errorf("at +%s: got %q fallback=%v err=%v, want %q fallback=%v", tc.now.Sub(t0), got, fb, err, tc.want, tc.fallback)
		}
	}
	if _, _, err := SelectSigningKey(t.TempDir(), t0, delay); err == nil {
		t.Error("empty directory: no error")
	}
}
