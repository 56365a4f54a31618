package event

import (
	"strings"
	"testing"
)

func TestValidType(t *testing.T) {
	for s, want := range map[string]bool{
		"batch_prediction.completed":      true,
		"knowledge.processing.completed":  true,
		"a":                               true,
		"a_1.b_2.c3":                      true,
		strings.Repeat("a", MaxTypeLen):   true,
		"":                                false,
		".":                               false,
		"a.":                              false,
		".a":                              false,
		"a..b":                            false,
		"a.*":                             false,
		"a.>":                             false,
		"A.b":                             false,
		"a b":                             false,
		"a-b":                             false,
		"a\nb":                            false,
		"é":                               false,
		strings.Repeat("a", MaxTypeLen+1): false,
	} {
		if got := ValidType(s); got != want {
			t.Errorf("ValidType(%q): got %v, want %v", s, got, want)
		}
	}
}

func TestLabelIsBounded(t *testing.T) {
	for in, want := range map[string]string{
		"batch_prediction.failed": "batch_prediction.failed",
		"dataset.sync.finished":   LabelOther,
		"":                        LabelUnknown,
	} {
		if got := Label(in); got != want {
			t.Errorf("Label(%q): got %q, want %q", in, got, want)
		}
	}
	if got := len(Labels()); got != len(Known())+2 {
		t.Fatalf("Labels: got %d values, want %d", got, len(Known())+2)
	}
}
