package workshop

import (
	"bytes"
	"fmt"
	"strings"
)

// SourceFile is a lesson's one C source: its starter and its solution are
// both derived from it (Derive), so a fix to the shared lines reaches both.
const SourceFile = "lesson.bpf.c"

// The marker lines of a SourceFile, each alone on its line (indentation
// allowed). Solution-only lines sit between comments and starter-only lines
// in #if 0, so the source compiles as the solution as it stands.
const (
	solutionBegin = "// >>> solution"
	solutionEnd   = "// <<< solution"
	starterBegin  = "#if 0 // >>> starter"
	starterEnd    = "#endif // <<< starter"
)

// Derive returns the starter (starter true) or the solution written in a
// lesson's source: every line outside the markers' blocks, and the lines of
// the chosen side's blocks, without the marker lines. An unbalanced, nested
// or misspelt marker is an error naming its line.
func Derive(src []byte, starter bool) ([]byte, error) {
	var out bytes.Buffer
	open, openAt := "", 0
	for i, line := range bytes.SplitAfter(src, []byte("\n")) {
		n, t := i+1, string(bytes.TrimSpace(line))
		switch t {
		case solutionBegin, starterBegin:
			if open != "" {
				return nil, fmt.Errorf("line %d: %q inside the block opened at line %d: blocks do not nest", n, t, openAt)
			}
			open, openAt = t, n
			continue
		case solutionEnd, starterEnd:
			if want := closer(open); t != want {
				if open == "" {
					return nil, fmt.Errorf("line %d: %q closes no block", n, t)
				}
				return nil, fmt.Errorf("line %d: %q where the block opened at line %d wants %q", n, t, openAt, want)
			}
			open = ""
			continue
		}
		if strings.Contains(t, "// >>>") || strings.Contains(t, "// <<<") {
			return nil, fmt.Errorf("line %d: %q is no marker: markers are %q, %q, %q and %q, alone on their line",
				n, t, solutionBegin, solutionEnd, starterBegin, starterEnd)
		}
		if open == "" || (open == starterBegin) == starter {
			out.Write(line)
		}
	}
	if open != "" {
		return nil, fmt.Errorf("line %d: %q is never closed", openAt, open)
	}
	return out.Bytes(), nil
}

// closer is the marker that ends the block open opens.
func closer(open string) string {
	switch open {
	case solutionBegin:
		return solutionEnd
	case starterBegin:
		return starterEnd
	}
	return ""
}
