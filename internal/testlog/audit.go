package testlog

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// AuditFields reads the fields docs/audit.md documents for one session
// event: the first column of the table under the heading "### `event`",
// where a cell may name several fields ("`namespace`, `pod`"). A row "as in
// `open`" takes the fields it names from that table as they are.
func AuditFields(event string) ([]string, error) {
	_, self, _, _ := runtime.Caller(0)
	doc, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "docs", "audit.md"))
	if err != nil {
		return nil, err
	}
	var fields []string
	in := false
	for line := range strings.SplitSeq(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			if in {
				break
			}
			in = strings.HasPrefix(line, "### `"+event+"`")
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line, "|", 3)[1]
		for name := range strings.SplitSeq(cell, ",") {
			name = strings.Trim(strings.TrimSpace(name), "`")
			if name != "" && !slices.Contains(fields, name) {
				fields = append(fields, name)
			}
		}
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("docs/audit.md documents no fields for event %q", event)
	}
	return fields, nil
}

// baseFields are on every line (slog's own) and the event label.
var baseFields = []string{"time", "level", "msg", "event"}

// CheckAuditLine compares one logged line with docs/audit.md: its event is
// event, every field it carries is documented for that event, and every
// documented field is there except those in absent (fields the schema
// documents as conditional and this line's case does not have).
func CheckAuditLine(line map[string]any, event string, absent ...string) error {
	fields, err := AuditFields(event)
	if err != nil {
		return err
	}
	var problems []string
	if line["event"] != event {
		problems = append(problems, fmt.Sprintf("event %v, want %s", line["event"], event))
	}
	for k := range line {
		if !slices.Contains(fields, k) && !slices.Contains(baseFields, k) {
			problems = append(problems, "undocumented field "+k)
		}
	}
	for _, f := range fields {
		_, has := line[f]
		switch {
		case slices.Contains(absent, f) && has:
			problems = append(problems, "field "+f+" present in a case that should not have it")
		case !slices.Contains(absent, f) && !has:
			problems = append(problems, "documented field "+f+" missing")
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%s line %v: %s", event, line, strings.Join(problems, "; "))
	}
	return nil
}
