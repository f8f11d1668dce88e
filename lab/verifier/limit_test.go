package verifier

import (
	"strings"
	"testing"
)

func TestLimitsTable(t *testing.T) {
	runs := map[string][]Limit{
		"5.10": {{Name: "stack", Value: 512, Unit: "bytes", Bound: 512}, {Name: "key length", Value: 2048, Unit: "bytes", AtLeast: true}},
		"7.2":  {{Name: "stack", Value: 512, Unit: "bytes", Bound: 512}},
	}
	got := LimitsTable(runs, nil)
	want := "| limit | 5.10 | 7.2 |\n|---|--:|--:|\n" +
		"| key length | ≥ 2048 bytes | - |\n" +
		"| stack | 512 bytes | 512 bytes |\n"
	if got != want {
		t.Errorf("LimitsTable:\n%s\nwant:\n%s", got, want)
	}
	if got := LimitsTable(runs, []string{"7.2"}); strings.Contains(got, "5.10") || !strings.Contains(got, "| stack | 512 bytes |") {
		t.Errorf("LimitsTable for 7.2 only:\n%s", got)
	}
	if LimitsTable(nil, nil) != "" {
		t.Error("LimitsTable of nothing is not empty")
	}
}
