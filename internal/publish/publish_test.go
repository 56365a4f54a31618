package publish

import (
	"testing"
	"time"
)

func TestCaptures(t *testing.T) {
	tests := []struct {
		subjects []string
		want     bool
	}{
		{[]string{"datagrid.>"}, true},
		{[]string{">"}, true},
		{[]string{"orders.>", "datagrid.>"}, true},
		{[]string{"datagrid.batch_prediction.>"}, false},
		{[]string{"datagrid.*"}, false},
		{[]string{"datagridx.>"}, false},
		{[]string{"data.>"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := captures(tt.subjects, "datagrid.>"); got != tt.want {
			t.Errorf("captures(%v): got %v, want %v", tt.subjects, got, tt.want)
		}
	}
	if !captures([]string{"acme.>"}, "acme.datagrid.>") {
		t.Error("acme.> should capture acme.datagrid.>")
	}
}

// TestCETimeFollowsTheSecond: the kept ce-time is reused only for the same
// second.
func TestCETimeFollowsTheSecond(t *testing.T) {
	var p Publisher
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{time.Unix(1775847600, 0), "2026-04-10T19:00:00Z"},
		{time.Unix(1775847600, 900_000_000), "2026-04-10T19:00:00Z"},
		{time.Unix(1775847601, 0).In(time.FixedZone("x", 3600)), "2026-04-10T19:00:01Z"},
		{time.Unix(1775847600, 0), "2026-04-10T19:00:00Z"},
	} {
		if got := p.ceTime(tt.t); got != tt.want {
			t.Errorf("ceTime(%v) = %s, want %s", tt.t, got, tt.want)
		}
	}
}
