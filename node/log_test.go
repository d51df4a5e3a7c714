package node_test

import (
	"log/slog"
	"testing"
)

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// testLogger sends a node's logs to t.Log, so that they show with a
// failing test only.
func testLogger(t testing.TB, id string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test_node", id)
}
