package publish

import "testing"

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
