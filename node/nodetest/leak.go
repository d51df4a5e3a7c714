package nodetest

import "go.uber.org/goleak"

// LeakOptions are the goleak options for a test binary that starts nodes.
// A node waits for each Raft future on a goroutine of its own (node's
// waitFuture), which ends when the future resolves; hashicorp/raft leaves
// a request unresolved when it shuts down with the request still queued in
// one of its buffered channels (VerifyLeader's, for one, as the node stops:
// hashicorp/raft issues #268 and #498), so that goroutine outlives the node.
// It holds no resource but the future.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error")}
}
