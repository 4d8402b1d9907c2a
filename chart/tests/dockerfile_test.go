package tests

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// dockerfile is the repository's Dockerfile, split into logical lines
// (continuations joined, comments dropped).
func dockerfile(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		lines = append(lines, strings.TrimSpace(cur.String()))
		cur.Reset()
	}
	return lines
}

// shellWords splits a shell command line, honouring double and single quotes
// (enough for a Dockerfile RUN line; no escapes inside quotes needed).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	// Bytes, not runes: every separator and quote is ASCII, and other bytes
	// (even invalid UTF-8) pass through unchanged.
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case quote != 0:
			if b == quote {
				quote = 0
			} else {
				cur.WriteByte(b)
			}
		case b == '"' || b == '\'':
			quote, inWord = b, true
		case b == ' ' || b == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(b)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func TestDockerfileShape(t *testing.T) {
	lines := dockerfile(t)
	var froms []string
	var final []string // instructions of the last stage
	for _, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			final = nil
			var image string
			for _, f := range strings.Fields(l)[1:] {
				if !strings.HasPrefix(f, "--") {
					image = f
					break
				}
			}
			froms = append(froms, image)
			if _, ok := registryHost(image); !ok {
				t.Errorf("base image %q has no explicit registry host", image)
			}
		}
		final = append(final, l)
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, FROM lines: %v", froms)
	}
	// The tag may carry a digest pin (tests/release requires one).
	if last, _, _ := strings.Cut(froms[len(froms)-1], "@"); last != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final base %q, want distroless static nonroot", last)
	}
	var copies, users, entry []string
	for _, l := range final[1:] {
		switch strings.Fields(l)[0] {
		case "COPY":
			copies = append(copies, l)
		case "USER":
			users = append(users, l)
		case "ENTRYPOINT":
			entry = append(entry, l)
		case "RUN", "ADD":
			t.Errorf("final stage runs or adds something: %q", l)
		}
	}
	if len(copies) != 1 || !strings.HasSuffix(copies[0], " /k8s-ws-proxy") || !strings.Contains(copies[0], "--from=") {
		t.Errorf("final stage must copy only the binary to /k8s-ws-proxy: %v", copies)
	}
	// 65532 is distroless' nonroot user; numeric so runAsNonRoot can verify it.
	if len(users) != 1 || users[0] != "USER 65532:65532" {
		t.Errorf("USER %v, want the nonroot uid 65532", users)
	}
	if len(entry) != 1 || entry[0] != `ENTRYPOINT ["/k8s-ws-proxy"]` {
		t.Errorf("ENTRYPOINT %v", entry)
	}
}

// goBuildLine returns the environment assignments and the go build arguments
// of the Dockerfile's build RUN line.
func goBuildLine(t *testing.T) (env map[string]string, args []string) {
	t.Helper()
	for _, l := range dockerfile(t) {
		if !strings.HasPrefix(l, "RUN ") || !strings.Contains(l, "go build") {
			continue
		}
		words, err := shellWords(strings.TrimPrefix(l, "RUN "))
		if err != nil {
			t.Fatal(err)
		}
		env = map[string]string{}
		for i, w := range words {
			if w == "go" && i+1 < len(words) && words[i+1] == "build" {
				return env, words[i+2:]
			}
			if k, v, ok := strings.Cut(w, "="); ok && !strings.HasPrefix(w, "--") {
				env[k] = v
			}
		}
	}
	t.Fatal("no RUN ... go build line in the Dockerfile")
	return nil, nil
}

// staticELF reports why an executable is not static, or nil.
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var problems []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			problems = append(problems, "has a PT_INTERP program header (needs a dynamic loader)")
		}
		if p.Type == elf.PT_DYNAMIC {
			problems = append(problems, "has a PT_DYNAMIC segment")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		problems = append(problems, fmt.Sprintf("DT_NEEDED %v", libs))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// buildLikeDockerfile builds ./cmd/k8s-ws-proxy with exactly the Dockerfile's
// go build line (for the host's GOOS/GOARCH) into out.
func buildLikeDockerfile(t *testing.T, out, version, commit string) {
	t.Helper()
	env, args := goBuildLine(t)
	if env["CGO_ENABLED"] != "0" {
		t.Fatalf("Dockerfile build has CGO_ENABLED=%q, want 0", env["CGO_ENABLED"])
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "./cmd/k8s-ws-proxy"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("Dockerfile go build lacks %q: %s", want, joined)
		}
	}
	buildArgs := []string{"build"}
	for i := 0; i < len(args); i++ {
		a := strings.NewReplacer("${VERSION}", version, "${COMMIT}", commit).Replace(args[i])
		if a == "-o" {
			i++ // our own output path below
			continue
		}
		buildArgs = append(buildArgs, a)
	}
	buildArgs = append(buildArgs[:len(buildArgs)-1], "-o", out, buildArgs[len(buildArgs)-1])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", buildArgs...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH, "GOFLAGS=-buildvcs=false")
	for k, v := range env {
		if k != "GOOS" && k != "GOARCH" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", buildArgs, err, b)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The binary built exactly the Dockerfile's way is static, stripped of
// build paths and stamped with its version.
func TestDockerfileBinaryIsStatic(t *testing.T) {
	out := filepath.Join(t.TempDir(), "k8s-ws-proxy")
	buildLikeDockerfile(t, out, "v9.9.9-statictest", "c0ffee1")
	if err := staticELF(out); err != nil {
		t.Fatalf("binary built the Dockerfile's way is not static: %v", err)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if root := repoRoot(t); bytes.Contains(bin, []byte(root+"/")) {
		t.Errorf("binary contains the build directory %s: -trimpath not effective", root)
	}
	v, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "v9.9.9-statictest") || !strings.Contains(string(v), "c0ffee1") {
		t.Errorf("version output %q, %v: ldflags not applied", v, err)
	}
}

// The static check itself must be able to fail: a dynamically linked system
// binary is reported as such.
func TestStaticCheckDetectsDynamicBinary(t *testing.T) {
	for _, p := range []string{"/bin/ls", "/usr/bin/env", "/bin/sh"} {
		if _, err := os.Stat(p); err == nil {
			if err := staticELF(p); err == nil || !strings.Contains(err.Error(), "PT_INTERP") {
				t.Fatalf("staticELF(%s) = %v, want a PT_INTERP finding", p, err)
			}
			return
		}
	}
	t.Fatal("no dynamically linked system binary found to test against")
}

func TestShellWords(t *testing.T) {
	got, err := shellWords(`CGO_ENABLED=0 go build -ldflags "-s -w -X a=b" -o 'x y' ./c`)
	want := []string{"CGO_ENABLED=0", "go", "build", "-ldflags", "-s -w -X a=b", "-o", "x y", "./c"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("shellWords = %q, %v", got, err)
	}
	if _, err := shellWords(`"open`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}

// FuzzShellWords: the RUN-line splitter never panics, agrees with
// strings.Fields on unquoted input, and never returns a word containing the
// separator unless a quote put it there.
func FuzzShellWords(f *testing.F) {
	f.Add(`CGO_ENABLED=0 go build -ldflags "-s -w" ./c`)
	f.Add(`a 'b c' "d 'e'" f`)
	f.Add(`"unterminated`)
	f.Fuzz(func(t *testing.T, s string) {
		words, err := shellWords(s)
		if err != nil {
			return
		}
		if !strings.ContainsAny(s, `"'`) {
			if strings.Join(words, "\x00") != strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' }), "\x00") {
				t.Fatalf("shellWords(%q) = %q", s, words)
			}
		}
	})
}
