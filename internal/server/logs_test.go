package server_test

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/datagrid-relay/relay/internal/relaytest"
)

// logBuffer collects a relay's JSON log lines for a test to read.
type logBuffer struct{ relaytest.Buffer }

// logger returns a debug-level JSON logger writing to b.
func (b *logBuffer) logger() *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(b), zap.DebugLevel))
}
