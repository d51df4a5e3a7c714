package dnsserver

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its Server: no goroutine outlives it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
