package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeClock advances by step on every reading.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Unix(1700000000, 0)
	return func() time.Time { t = t.Add(step); return t }
}

type event struct {
	t    float64
	code string
	data string
}

// parseCast decodes a recording strictly: every line valid UTF-8 and JSON,
// a header object first, then three-element event arrays.
func parseCast(t testing.TB, b []byte) (map[string]any, []event) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var hdr map[string]any
	var evs []event
	for n := 0; sc.Scan(); n++ {
		line := sc.Bytes()
		if !utf8.Valid(line) || !json.Valid(line) {
			t.Fatalf("line %d is not valid UTF-8 JSON: %q", n+1, line)
		}
		if n == 0 {
			if err := json.Unmarshal(line, &hdr); err != nil {
				t.Fatalf("header: %v", err)
			}
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
			t.Fatalf("line %d is not a 3-element event: %q", n+1, line)
		}
		var e event
		if json.Unmarshal(raw[0], &e.t) != nil || json.Unmarshal(raw[1], &e.code) != nil || json.Unmarshal(raw[2], &e.data) != nil {
			t.Fatalf("line %d has wrong types: %q", n+1, line)
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if hdr == nil {
		t.Fatal("no header")
	}
	return hdr, evs
}

func TestHeader(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{
		Width: 120, Height: 40, Timestamp: time.Unix(1700000000, 0), Command: "sh -c ls", Title: "ns/pod/c",
		SID: "s1", Subject: "alice", Namespace: "ns", Pod: "pod", Container: "c", Node: "n1",
		Transport: "v5.channel.k8s.io", ProxyVersion: "v1.2.3",
	}, Options{Now: fakeClock(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.End(End{ExitCode: 0, Reason: "exited"}); err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"width":120,"height":40,"timestamp":1700000000,"command":"sh -c ls","title":"ns/pod/c","sid":"s1","sub":"alice","namespace":"ns","pod":"pod","container":"c","node":"n1","transport":"v5.channel.k8s.io","proxy_version":"v1.2.3"}`
	if got, _, _ := strings.Cut(buf.String(), "\n"); got != want {
		t.Fatalf("header\n got %s\nwant %s", got, want)
	}
}

func TestHeaderDefaultsSize(t *testing.T) {
	var buf bytes.Buffer
	if _, err := NewWriter(&buf, Header{}, Options{}); err != nil {
		t.Fatal(err)
	}
	hdr, _ := parseCast(t, buf.Bytes())
	if hdr["width"] != 80.0 || hdr["height"] != 24.0 || hdr["version"] != 2.0 {
		t.Fatalf("header %v", hdr)
	}
}

func TestEvents(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Width: 80, Height: 24}, Options{Now: fakeClock(250 * time.Millisecond), IncludeInput: true})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Output(Stdout, []byte("hello\r\n")))
	must(w.Output(Stderr, []byte("oops\n")))
	must(w.Resize(100, 30))
	must(w.Input([]byte("ls\r")))
	must(w.End(End{ExitCode: 3, Reason: "exited"}))
	_, evs := parseCast(t, buf.Bytes())
	want := []event{
		{0.25, "o", "hello\r\n"},
		{0.5, "o", "oops\n"},
		{0.75, "r", "100x30"},
		{1.0, "i", "ls\r"},
		{1.25, "m", `{"event":"end","exit_code":3,"reason":"exited"}`},
	}
	if len(evs) != len(want) {
		t.Fatalf("events %v, want %v", evs, want)
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d = %v, want %v", i, evs[i], want[i])
		}
	}
	if err := w.Output(Stdout, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Output after End: %v", err)
	}
}

func TestInputOffByDefault(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	if err := w.Input([]byte("secret\r")); err != nil {
		t.Fatal(err)
	}
	_ = w.End(End{ExitCode: 0, Reason: "exited"})
	if strings.Contains(buf.String(), "secret") {
		t.Fatalf("input recorded without IncludeInput:\n%s", buf.String())
	}
}

// A character split across reads must arrive whole in one event.
func TestSplitUTF8HeldBack(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	s := []byte("h\u00e9llo \u2713 \U0001F600")
	for i := range s {
		if err := w.Output(Stdout, s[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.End(End{ExitCode: 0, Reason: "exited"})
	_, evs := parseCast(t, buf.Bytes())
	var got strings.Builder
	for _, e := range evs {
		if e.code == "o" {
			if strings.ContainsRune(e.data, utf8.RuneError) || strings.ContainsRune(e.data, escapeBase+0xe2) {
				t.Fatalf("event %q has a cut character", e.data)
			}
			got.WriteString(e.data)
		}
	}
	if got.String() != string(s) {
		t.Fatalf("got %q, want %q", got.String(), s)
	}
}

// Streams keep their own partial characters: stderr between the halves of
// a stdout character does not break it.
func TestSplitUTF8PerStream(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	_ = w.Output(Stdout, []byte{0xe2, 0x9c})
	_ = w.Output(Stderr, []byte("E"))
	_ = w.Output(Stdout, []byte{0x93})
	_ = w.End(End{})
	_, evs := parseCast(t, buf.Bytes())
	if evs[0].data != "E" || evs[1].data != "\u2713" {
		t.Fatalf("events %v", evs)
	}
}

func TestInvalidBytesRecoverable(t *testing.T) {
	in := []byte("a\xffb\xc3(\xe2\x9c end \xf4\x8f\xbe\x80 \xef\xbf\xbd")
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	_ = w.Output(Stdout, in)
	_ = w.End(End{})
	_, evs := parseCast(t, buf.Bytes())
	if got := Unescape(evs[0].data); !bytes.Equal(got, in) {
		t.Fatalf("Unescape = %q, want %q", got, in)
	}
	if !strings.Contains(evs[0].data, "\U0010FFFF") {
		t.Fatalf("0xff not escaped as U+10FFFF: %q", evs[0].data)
	}
}

// An incomplete sequence left at the end is flushed, escaped.
func TestPendingFlushedAtEnd(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	_ = w.Output(Stdout, []byte("x\xe2\x9c"))
	_ = w.End(End{ExitCode: 1, Reason: "exited"})
	_, evs := parseCast(t, buf.Bytes())
	var all []byte
	for _, e := range evs {
		if e.code == "o" {
			all = append(all, Unescape(e.data)...)
		}
	}
	if !bytes.Equal(all, []byte("x\xe2\x9c")) {
		t.Fatalf("got %q", all)
	}
}

func TestControlCharacters(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{})
	in := "\x1b[31mred\x1b[0m\x00\x07\"\\\t\x7f"
	_ = w.Output(Stdout, []byte(in))
	_ = w.End(End{})
	_, evs := parseCast(t, buf.Bytes())
	if evs[0].data != in {
		t.Fatalf("got %q, want %q", evs[0].data, in)
	}
}

func TestMaxBytes(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{}, Options{MaxBytes: 400})
	var err error
	n := 0
	for ; n < 100 && err == nil; n++ {
		err = w.Output(Stdout, []byte("0123456789"))
	}
	if !errors.Is(err, ErrMaxBytes) {
		t.Fatalf("after %d writes: %v", n, err)
	}
	if err := w.Output(Stdout, []byte("more")); !errors.Is(err, ErrMaxBytes) {
		t.Fatalf("after the limit: %v", err)
	}
	if err := w.End(End{ExitCode: 0, Reason: "exited"}); err != nil {
		t.Fatal(err)
	}
	_, evs := parseCast(t, buf.Bytes())
	last2 := evs[len(evs)-2:]
	if last2[0].code != "m" || !strings.Contains(last2[0].data, "max_bytes") || !strings.Contains(last2[1].data, `"end"`) {
		t.Fatalf("last events %v", last2)
	}
	// Everything but the two markers fits the limit.
	body := buf.Len()
	markers := 0
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		if strings.Contains(l, `"m"`) {
			markers += len(l)
		}
	}
	if body-markers > 400 {
		t.Fatalf("recording is %d bytes, %d without markers, limit 400", body, body-markers)
	}
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	f.n--
	return len(p), nil
}

func TestWriteErrorSticky(t *testing.T) {
	boom := errors.New("disk full")
	w, err := NewWriter(&failAfter{n: 2, err: boom}, Header{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Output(Stdout, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := w.Output(Stdout, []byte("b")); !errors.Is(err, boom) {
		t.Fatalf("second event: %v", err)
	}
	if err := w.Resize(1, 1); !errors.Is(err, boom) {
		t.Fatalf("after a failure: %v", err)
	}
	if err := w.End(End{}); !errors.Is(err, boom) {
		t.Fatalf("End after a failure: %v", err)
	}
}

func TestAppendSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0.000000", 1500 * time.Millisecond: "1.500000", 7 * time.Microsecond: "0.000007",
		-time.Second: "0.000000", 3723*time.Second + 12*time.Microsecond: "3723.000012",
	} {
		if got := string(appendSeconds(nil, d)); got != want {
			t.Errorf("appendSeconds(%v) = %s, want %s", d, got, want)
		}
	}
}

// FuzzOutput feeds arbitrary bytes, cut at arbitrary points, and checks that
// every line is valid UTF-8 JSON and that Unescape recovers the input.
func FuzzOutput(f *testing.F) {
	f.Add([]byte("plain ascii\r\n"), uint8(3))
	f.Add([]byte("h\u00e9llo w\u00f6rld \u2713\n"), uint8(1))
	f.Add([]byte("\xff\xfe\xc3(\xe2\x9c"), uint8(2))
	f.Add([]byte("\xf4\x8f\xbf\xbf\xf4\x90\x80\x80"), uint8(1))
	f.Add([]byte("\U0001F600\U0010FF80"), uint8(5))
	f.Add([]byte{0xed, 0xa0, 0x80, 0xc0, 0xaf}, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		// The same events unbuffered and through a small buffer whose
		// timer fires every few events: the files must be the same.
		var buf, buffered bytes.Buffer
		var ft fakeTimers
		w, err := NewWriter(&buf, Header{Command: string(in)}, Options{IncludeInput: true, Now: fakeClock(time.Microsecond)})
		if err != nil {
			t.Fatal(err)
		}
		wb, err := NewWriter(&buffered, Header{Command: string(in)}, Options{IncludeInput: true, Now: fakeClock(time.Microsecond),
			Buffer: int(step>>3) + 1, afterFunc: ft.afterFunc})
		if err != nil {
			t.Fatal(err)
		}
		k := int(step%7) + 1
		for i := 0; i < len(in); i += k {
			for _, w := range []*Writer{w, wb} {
				if err := w.Output(Stdout, in[i:min(i+k, len(in))]); err != nil {
					t.Fatal(err)
				}
				if err := w.Input(in[i:min(i+k, len(in))]); err != nil {
					t.Fatal(err)
				}
			}
			if l := ft.live(); i%3 == 0 && len(l) == 1 {
				ft.fire(t)
			}
		}
		for _, w := range []*Writer{w, wb} {
			if err := w.End(End{ExitCode: 1, Reason: string(in)}); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(buffered.Bytes(), buf.Bytes()) {
			t.Fatalf("buffered recording differs:\n got %q\nwant %q", buffered.Bytes(), buf.Bytes())
		}
		_, evs := parseCast(t, buf.Bytes())
		var out, inp []byte
		for _, e := range evs {
			switch e.code {
			case "o":
				out = append(out, Unescape(e.data)...)
			case "i":
				inp = append(inp, Unescape(e.data)...)
			}
		}
		if !bytes.Equal(out, in) || !bytes.Equal(inp, in) {
			t.Fatalf("round trip:\n in %q\nout %q\ninp %q", in, out, inp)
		}
	})
}

// BenchmarkAppendString: the recorder's per-byte cost on printable output
// (what bulk sessions write) and on UTF-8 text.
func BenchmarkAppendString(b *testing.B) {
	for name, line := range map[string]string{
		"ascii": "2000000 lines of seq output and log text: [INFO] ready=1\n",
		"utf8":  "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e\n",
	} {
		b.Run(name, func(b *testing.B) {
			p := bytes.Repeat([]byte(line), 32<<10/len(line))
			buf := make([]byte, 0, 2*len(p))
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				buf = appendString(buf[:0], p)
			}
		})
	}
}

// FuzzAppendStringAgainstReference: appendString (with its fast path for
// printable ASCII) writes exactly what the package doc's rule, applied
// one code point at a time, writes.
func FuzzAppendStringAgainstReference(f *testing.F) {
	f.Add([]byte("plain ascii, \"quoted\" \\ back\tslash\r\n\x00\x1f\x7f"))
	f.Add([]byte("h\u00e9llo w\u00f6rld \u2713\n\xff\xfe\xc3(\U0010FF80\uFFFD"))
	f.Fuzz(func(t *testing.T, p []byte) {
		got := string(appendString([]byte("prefix"), p))
		if want := "prefix" + referenceString(p); got != want {
			t.Fatalf("appendString(%q)\n got %q\nwant %q", p, got, want)
		}
	})
}

func referenceString(p []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		switch {
		case (r == utf8.RuneError && size == 1) || r >= escapeBase+0x80:
			for _, x := range p[:size] {
				sb.WriteRune(rune(escapeBase + int(x)))
			}
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteRune(r)
		}
		p = p[size:]
	}
	sb.WriteByte('"')
	return sb.String()
}

// BenchmarkOutputFile: what a bulk session costs the recorder per byte, to
// a real file: 32 KiB chunks of the bench's text (`yes` of 62 printable
// bytes and a newline), as the proxy's relay hands them over; "direct"
// writes each event, "buffered" as a best-effort recording does.
func BenchmarkOutputFile(b *testing.B) {
	line := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
	for _, c := range []struct {
		name string
		o    Options
	}{{"direct", Options{}}, {"buffered", Options{Buffer: spoolBuffer}}} {
		b.Run(c.name, func(b *testing.B) {
			for _, size := range []int{32 << 10, 4 << 10} {
				b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
					p := bytes.Repeat([]byte(line), size/len(line)+1)[:size]
					f, err := os.Create(filepath.Join(b.TempDir(), "b.cast"))
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					w, err := NewWriter(f, Header{}, c.o)
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(len(p)))
					for b.Loop() {
						if err := w.Output(Stdout, p); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					if err := w.End(End{}); err != nil {
						b.Fatal(err)
					}
				})
			}
		})
	}
}

// plainRun finds the first byte appendString cannot copy as it is,
// wherever it is in an eight-byte test or the tail after the last one and
// whatever follows: every byte value at every position in every plain
// background, and every pair of values at every pair of positions.
func TestPlainRun(t *testing.T) {
	isPlain := func(c byte) bool { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' }
	check := func(p []byte, from int) {
		want := from
		for want < len(p) && isPlain(p[want]) {
			want++
		}
		if got := plainRun(p, from); got != want {
			t.Fatalf("plainRun(%q, %d) = %d, want %d", p, from, got, want)
		}
	}
	for bg := 0; bg < 256; bg++ {
		if !isPlain(byte(bg)) {
			continue
		}
		for pos := range 19 {
			for v := range 256 {
				p := bytes.Repeat([]byte{byte(bg)}, 19)
				p[pos] = byte(v)
				check(p, 0)
				check(p, 3)
			}
		}
	}
	for pos := range 11 {
		for q := pos + 1; q < 11; q++ {
			for v := range 256 {
				for u := range 256 {
					p := []byte("aaaaaaaaaaa")
					p[pos], p[q] = byte(v), byte(u)
					check(p, 0)
				}
			}
		}
	}
}
