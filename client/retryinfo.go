package client

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxRetryDelay caps the delay a node may ask for (retryDelay), so that a
// wrong or hostile answer cannot park a write or the beats for longer; the
// call's context bounds it too.
const maxRetryDelay = 30 * time.Second

// retryDelay returns the delay a RESOURCE_EXHAUSTED status asks the client
// to wait before it tries again (google.rpc.RetryInfo, which a node sends
// when the client is over its write rate), at most maxRetryDelay. ok is
// false for any other error, or if the status carries no RetryInfo.
func retryDelay(err error) (d time.Duration, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, det := range st.Details() {
		ri, isRetryInfo := det.(*errdetails.RetryInfo)
		if !isRetryInfo || ri.GetRetryDelay() == nil {
			continue
		}
		d := ri.GetRetryDelay().AsDuration()
		return min(max(d, 0), maxRetryDelay), true
	}
	return 0, false
}
