package hmac

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
)

// usableWithin is the bound on "swap to new key usable".
const usableWithin = time.Second

// runKeyring runs k until the test ends, once its watches are in place.
func runKeyring(t *testing.T, k *Keyring) {
	t.Helper()
	filewatchtest.Start(t, k.Run, k.r.Started())
}

func newTestKeyring(t *testing.T, opts KeyringOptions) (*Keyring, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = testLogger(logs)
	k, err := NewKeyring(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever happened, no key material reaches the log.
		for _, key := range [][]byte{keyA, keyB} {
			if strings.Contains(logs.String(), string(key[:20])) {
				t.Errorf("log contains key material:\n%s", logs)
			}
		}
	})
	return k, logs
}

func TestKeyringLoadsSecretVolume(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{
		"key":  keyA,
		"key2": append(append([]byte{}, keyB...), " \t\r\n\n"...), // trailing whitespace is not key
	})
	// Files that are not keys: hidden, a directory.
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), []byte("hidden-key-0123456789abcdef0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir})
	if !k.Ready() || k.KeyCount() != 2 || k.Reloads() != 1 {
		t.Fatalf("ready=%v count=%d reloads=%d", k.Ready(), k.KeyCount(), k.Reloads())
	}
	for _, key := range [][]byte{keyA, keyB} {
		got, ok := k.Lookup(KeyID(key), time.Now())
		if !ok || string(got) != string(key) {
			t.Errorf("Lookup(%s) = %q, %v", KeyID(key), got, ok)
		}
	}
	if logs.Count(`"file":"subdir"`) != 1 {
		t.Errorf("directory not reported as refused:\n%s", logs)
	}
	if strings.Contains(logs.String(), ".hidden") || strings.Contains(logs.String(), "..data") {
		t.Errorf("hidden entries were looked at:\n%s", logs)
	}
	// The keyring is a KeySource for a Verifier.
	v := newTestVerifier(t, VerifierOptions{Keys: k, Now: time.Now})
	c := validClaims()
	c.IssuedAt, c.ExpiresAt = numericDate(time.Now()), numericDate(time.Now().Add(time.Minute))
	if _, err := v.Verify(mustSign(t, keyB, c)); err != nil {
		t.Errorf("token signed with a keyring key: %v", err)
	}
}

// Rotation exactly as the kubelet does it: the new key is usable within a
// second of the ..data swap, the old one during the grace period only.
func TestKeyringRotation(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyA})
	clk := newClock(time.Now())
	const grace = 2 * time.Minute
	// An hour-long poll: only the watch can make this test pass in time.
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir, Grace: grace, PollInterval: time.Hour, Now: clk.Now})
	runKeyring(t, k)
	v := newTestVerifier(t, VerifierOptions{Keys: k, Now: clk.Now})
	token := func(key []byte, jti string) string {
		c := validClaims()
		c.ID = jti
		c.IssuedAt, c.ExpiresAt = numericDate(clk.Now()), numericDate(clk.Now().Add(time.Minute))
		return mustSign(t, key, c)
	}
	oldToken := token(keyA, "minted-before-rotation")

	switched := filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"key": keyB})
	hmactest.WaitForKey(t, k, KeyID(keyB), true, usableWithin)
	if d := time.Since(switched); d > usableWithin {
		t.Errorf("new key usable %s after the swap, want <= %s", d, usableWithin)
	}
	if _, err := v.Verify(token(keyB, "new")); err != nil {
		t.Errorf("token with the new key: %v", err)
	}
	// The token minted just before the rotation still connects.
	if _, err := v.Verify(oldToken); err != nil {
		t.Errorf("token with the old key during grace: %v", err)
	}
	if k.KeyCount() != 2 || !k.Ready() {
		t.Errorf("count=%d during grace, want 2", k.KeyCount())
	}
	if logs.Count("left the key directory") != 1 {
		t.Errorf("rotation not logged once:\n%s", logs)
	}

	// After the grace period the old key is refused, even before any reload.
	clk.Add(grace)
	if _, err := v.Verify(token(keyA, "after-grace")); ReasonOf(err) != ReasonUnknownKey {
		t.Errorf("old key after grace: %v", err)
	}
	if _, err := v.Verify(token(keyB, "new-after-grace")); err != nil {
		t.Errorf("new key after grace: %v", err)
	}
	if k.KeyCount() != 1 {
		t.Errorf("count=%d after grace, want 1", k.KeyCount())
	}
	// A reload then forgets it, and says so once.
	k.reload()
	k.reload()
	if logs.Count("grace period over") != 1 {
		t.Errorf("grace end not logged once:\n%s", logs)
	}
}

// The ..data swap delay, repeated: every swap must be usable in time.
func TestKeyringSwapToUsableDelay(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": hmactest.NewKey(t)})
	k, _ := newTestKeyring(t, KeyringOptions{Dir: dir, PollInterval: time.Hour})
	runKeyring(t, k)
	var worst time.Duration
	for range 10 {
		key := hmactest.NewKey(t)
		switched := filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"key": key})
		hmactest.WaitForKey(t, k, KeyID(key), true, usableWithin)
		worst = max(worst, time.Since(switched))
	}
	if worst > usableWithin {
		t.Errorf("worst swap-to-usable %s, want <= %s", worst, usableWithin)
	}
	t.Logf("worst swap-to-usable over 10 swaps: %s", worst)
}

func TestKeyringMissingDirectoryThenCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir, PollInterval: time.Hour})
	if k.Ready() || k.KeyCount() != 0 || k.Reloads() != 0 {
		t.Fatalf("ready=%v count=%d reloads=%d on a missing dir", k.Ready(), k.KeyCount(), k.Reloads())
	}
	runKeyring(t, k)
	// Run re-reads once at start; the state is unchanged, so no new line.
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyA})
	// Seen through the parent's watch (the poll is an hour).
	hmactest.WaitForKey(t, k, KeyID(keyA), true, usableWithin)
	if n := logs.Count("key directory does not exist"); n != 1 {
		t.Errorf("missing dir logged %d times, want 1:\n%s", n, logs)
	}
	// The directory's own watch is in place: the next swap is seen too.
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"key": keyB})
	hmactest.WaitForKey(t, k, KeyID(keyB), true, usableWithin)
}

func TestKeyringDirectoryDeletedAndRecreated(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyA})
	clk := newClock(time.Now())
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir, PollInterval: time.Hour, Now: clk.Now})
	runKeyring(t, k)

	ch := k.Changed()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	filewatchtest.WaitChange(t, ch, "keyring")
	k.reload() // settle: the watch may still be catching up with RemoveAll
	// Deleted: the key is in its grace period, not dropped.
	if !k.Ready() {
		t.Error("not ready right after the directory vanished")
	}
	if _, ok := k.Lookup(KeyID(keyA), clk.Now().Add(DefaultMaxTTL+DefaultLeeway)); ok {
		t.Error("key still usable after the default grace")
	}
	// (RemoveAll empties the directory before removing it; a reload may
	// see the empty state in between, which is a state of its own.)
	if logs.Count("key directory does not exist") != 1 || logs.Count("keeping the previous keys") < 1 {
		t.Errorf("deletion not logged as expected:\n%s", logs)
	}

	// Recreated with a new key: seen through the parent's watch...
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyB})
	hmactest.WaitForKey(t, k, KeyID(keyB), true, usableWithin)
	// ...and the watch on the new directory works.
	key3 := hmactest.NewKey(t)
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"key": key3})
	hmactest.WaitForKey(t, k, KeyID(key3), true, usableWithin)
}

func TestKeyringPollingAloneFindsKeys(t *testing.T) {
	// Neither the directory nor its parent exists, so nothing can be
	// watched: only the poll can find the keys.
	dir := filepath.Join(t.TempDir(), "a", "b")
	k, _ := newTestKeyring(t, KeyringOptions{Dir: dir, PollInterval: 20 * time.Millisecond})
	runKeyring(t, k)
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyA})
	hmactest.WaitForKey(t, k, KeyID(keyA), true, 5*time.Second)
}

func TestKeyringEmptyAndShortKeys(t *testing.T) {
	dir := t.TempDir()
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir})
	if k.Ready() {
		t.Fatal("ready with an empty directory")
	}
	if logs.Count("every token will be refused") != 1 {
		t.Errorf("empty dir not logged:\n%s", logs)
	}
	short := "short-secret-value"
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": []byte(short + "\n")})
	k.reload()
	k.reload()
	if k.Ready() {
		t.Fatal("ready with only a short key")
	}
	if n := logs.Count(`"file":"key"`); n != 1 {
		t.Errorf("short key logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "18 bytes") {
		t.Errorf("short key's length not logged:\n%s", logs)
	}
	if strings.Contains(logs.String(), short) {
		t.Errorf("short key's bytes logged:\n%s", logs)
	}
}

func TestKeyringCorruptKeyKeepsPreviousForGrace(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": keyA})
	clk := newClock(time.Now())
	const grace = time.Minute
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir, Grace: grace, PollInterval: time.Hour, Now: clk.Now})
	runKeyring(t, k)

	ch := k.Changed()
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"key": []byte("oops\n")})
	filewatchtest.WaitChange(t, ch, "keyring")
	if !k.Ready() {
		t.Fatal("the last good key was dropped at once")
	}
	if _, ok := k.Lookup(KeyID(keyA), clk.Now()); !ok {
		t.Fatal("old key not usable during grace")
	}
	// Repeated reloads of the same bad state log nothing new.
	k.reload()
	k.reload()
	if n := logs.Count("keeping the previous keys"); n != 1 {
		t.Errorf("bad state logged %d times, want 1:\n%s", n, logs)
	}
	clk.Add(grace)
	if k.Ready() {
		t.Error("ready after the grace period with no valid key")
	}
	k.reload()
	if logs.Count("every token will be refused") != 1 {
		t.Errorf("end of grace with no key not logged:\n%s", logs)
	}
}

func TestKeyringUnreadableFileKeepsItsKey(t *testing.T) {
	// A plain directory (not a Secret volume) so one file can be broken.
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, keyA, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir, Now: clk.Now})
	// A symlink loop cannot be read even by root (tests run as root, so
	// permission bits would not do).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("key", path); err != nil {
		t.Fatal(err)
	}
	k.reload()
	if logs.Count("unreadable") != 1 {
		t.Errorf("unreadable file not logged:\n%s", logs)
	}
	// Not even in grace: still present, usable long after a grace period.
	if _, ok := k.Lookup(KeyID(keyA), clk.Now().Add(24*time.Hour)); !ok {
		t.Error("a transient read error retired the key")
	}
	// Once it is readable with another key, the old key goes into grace.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, keyB, 0o600); err != nil {
		t.Fatal(err)
	}
	k.reload()
	if _, ok := k.Lookup(KeyID(keyB), clk.Now()); !ok {
		t.Error("new key not loaded")
	}
	if _, ok := k.Lookup(KeyID(keyA), clk.Now().Add(DefaultMaxTTL+DefaultLeeway)); ok {
		t.Error("replaced key outlived its grace")
	}
}

func TestKeyringNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	// A FIFO would block a naive reader forever.
	if err := mkfifo(filepath.Join(dir, "fifo")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), keyA, 0o600); err != nil {
		t.Fatal(err)
	}
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir})
	if k.KeyCount() != 1 || logs.Count(`"file":"fifo"`) != 1 {
		t.Errorf("count=%d logs:\n%s", k.KeyCount(), logs)
	}
}

func TestKeyringOptionsAndRunTwice(t *testing.T) {
	if _, err := NewKeyring(KeyringOptions{}); err == nil {
		t.Error("empty Dir accepted")
	}
	if _, err := NewKeyring(KeyringOptions{Dir: t.TempDir(), Grace: -1}); err == nil {
		t.Error("negative grace accepted")
	}
	dir := t.TempDir()
	k, _ := newTestKeyring(t, KeyringOptions{Dir: dir, PollInterval: time.Hour})
	runKeyring(t, k)
	if err := k.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }

// Junk files in the key directory (issue 12 item 7: 200 files added 50 ms
// apart made one line per refused file per reload, 421,700 lines): each bad
// file is logged once per change of its state, and a burst of them costs a
// bounded number of lines.
func TestKeyringJunkFilesLoggedOncePerChange(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), keyA, 0o600); err != nil {
		t.Fatal(err)
	}
	k, logs := newTestKeyring(t, KeyringOptions{Dir: dir})
	junk := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lines := func() int { return strings.Count(logs.String(), "\n") }

	// One at a time, one look after each, as the watcher does.
	const n = 200
	before := lines()
	for i := range n {
		junk(fmt.Sprintf("junk-%03d", i))
		k.reload()
	}
	t.Logf("%d junk files one at a time: %d log lines", n, lines()-before)
	for i := range n {
		if c := logs.Count(fmt.Sprintf(`"file":"junk-%03d"`, i)); c != 1 {
			t.Fatalf("junk-%03d logged %d times, want once (%d lines in all)", i, c, lines()-before)
		}
	}
	if got := lines() - before; got > n+5 {
		t.Errorf("%d log lines for %d junk files, want at most %d", got, n, n+5)
	}

	// A burst: a bounded number of lines, whatever the number of files.
	before = lines()
	for i := range n {
		junk(fmt.Sprintf("burst-%03d", i))
	}
	for range 3 {
		k.reload()
	}
	if got := lines() - before; got > maxRefusedLogged+2 {
		t.Errorf("%d log lines for a burst of %d junk files, want at most %d:\n%s", got, n, maxRefusedLogged+2, logs)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf(`"not_listed":%d`, n-maxRefusedLogged)) {
		t.Errorf("the files not listed one by one are not counted:\n%s", logs)
	}

	// A file that goes away and comes back is a change of state: logged again.
	if err := os.Remove(filepath.Join(dir, "junk-007")); err != nil {
		t.Fatal(err)
	}
	k.reload()
	junk("junk-007")
	k.reload()
	if c := logs.Count(`"file":"junk-007"`); c != 2 {
		t.Errorf("junk-007 logged %d times after leaving and coming back, want 2", c)
	}
	if !k.Ready() || k.KeyCount() != 1 {
		t.Errorf("ready=%v count=%d with junk beside the key", k.Ready(), k.KeyCount())
	}
}
