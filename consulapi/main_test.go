package consulapi_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"

	"github.com/regcenter/registry/integration/harness"
)

// TestMain checks that no test leaves a goroutine behind (but the process
// spawner the harness keeps for Prometheus).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, harness.LeakOptions()...) }

func bearer(ctx context.Context, secret string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}
