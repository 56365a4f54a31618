// Package event knows Datagrid's event types: which exist today, which names
// are safe as NATS subject tokens, and how to keep metric labels bounded.
package event

import "slices"

// Known returns the event types Datagrid delivers today. A delivery of
// another type is still relayed; this list only sets the default
// subscription and bounds metric labels.
func Known() []string { return slices.Clone(known[:]) }

var known = [...]string{
	"knowledge.processing.completed",
	"batch_prediction.completed",
	"batch_prediction.failed",
	"batch_prediction.expired",
	"batch_prediction.cancelled",
}

// Intern returns the known event type spelled b, without allocating.
func Intern(b []byte) (string, bool) {
	for _, k := range known {
		if string(b) == k { // compared in place, not converted
			return k, true
		}
	}
	return "", false
}

// Metric label values for event types that are not in Known.
const (
	// LabelOther counts a valid event type outside Known.
	LabelOther = "other"
	// LabelUnknown counts a delivery refused before its type was read.
	LabelUnknown = "unknown"
)

// Labels are every value Label can return, for pre-initialising series.
func Labels() []string {
	return append(Known(), LabelOther, LabelUnknown)
}

// Label maps an event type to a bounded metric label value: the type itself
// when known, LabelOther when not, LabelUnknown when empty.
func Label(eventType string) string {
	switch {
	case eventType == "":
		return LabelUnknown
	case slices.Contains(known[:], eventType):
		return eventType
	default:
		return LabelOther
	}
}

// MaxTypeLen bounds an event type, and so a subject and a header.
const MaxTypeLen = 128

// ValidType reports whether s is safe as NATS subject tokens: one or more
// [a-z0-9_]+ parts joined by single dots, the first not starting with '_'
// (that space is the relay's own, e.g. _quarantine), at most MaxTypeLen
// bytes.
func ValidType(s string) bool {
	if s == "" || len(s) > MaxTypeLen || s[0] == '_' {
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			prevDot = false
		default:
			return false
		}
	}
	return !prevDot
}
