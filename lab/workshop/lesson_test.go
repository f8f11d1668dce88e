package workshop

import (
	"strings"
	"testing"
)

func TestDerive(t *testing.T) {
	src := "a\n" +
		"\t// >>> solution\n\tsol\n\t// <<< solution\n" +
		"\t#if 0 // >>> starter\n\t// TODO\n\tstart\n\t#endif // <<< starter\n" +
		"b\n"
	for _, c := range []struct {
		starter bool
		want    string
	}{
		{false, "a\n\tsol\nb\n"},
		{true, "a\n\t// TODO\n\tstart\nb\n"},
	} {
		got, err := Derive([]byte(src), c.starter)
		if err != nil || string(got) != c.want {
			t.Errorf("Derive(starter %v) = %q, %v; want %q", c.starter, got, err, c.want)
		}
	}
	// No markers, no trailing newline: the text as it is.
	if got, err := Derive([]byte("x\ny"), true); err != nil || string(got) != "x\ny" {
		t.Errorf("Derive without markers = %q, %v", got, err)
	}
}

func TestDeriveMarkerErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"a\n// >>> solution\nb\n", "line 2: \"// >>> solution\" is never closed"},
		{"a\n// <<< solution\n", "line 2: \"// <<< solution\" closes no block"},
		{"// >>> solution\n#if 0 // >>> starter\n#endif // <<< starter\n// <<< solution\n",
			"line 2: \"#if 0 // >>> starter\" inside the block opened at line 1: blocks do not nest"},
		{"// >>> solution\n// >>> solution\n", "line 2: \"// >>> solution\" inside the block opened at line 1"},
		{"#if 0 // >>> starter\nx\n// <<< solution\n", "line 3: \"// <<< solution\" where the block opened at line 1 wants \"#endif // <<< starter\""},
		{"x\n\n// >>> solutoin\n", "line 3: \"// >>> solutoin\" is no marker"},
		{"#if 0 // <<< starter\n", "line 1: \"#if 0 // <<< starter\" is no marker"},
	} {
		for _, starter := range []bool{false, true} {
			_, err := Derive([]byte(c.src), starter)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Derive(%q, starter %v): %v, want an error with %q", c.src, starter, err, c.want)
			}
		}
	}
}
