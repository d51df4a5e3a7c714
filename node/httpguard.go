package node

import "net/http"

// guardHTTP wraps the node's HTTP handler: a watch is freed of the
// server's read and write deadlines.
func (n *Node) guardHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWatch(r) {
			streamWithoutDeadlines(w)
		}
		next.ServeHTTP(w, r)
	})
}
