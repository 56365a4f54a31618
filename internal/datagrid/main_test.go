package datagrid_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: a server,
// connection or timer it forgot to stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
