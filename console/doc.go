// Package console holds the web console's static files: one HTML page, its
// style sheet and its ES module, embedded in the binary (go:embed) so that
// every node serves the same console with nothing fetched at run time and
// no build step. The node (node/console.go) serves them at /ui/ with the
// console's security headers, next to the few JSON and Server-Sent Events
// endpoints the page needs beyond the HTTP API.
//
// The page is plain JavaScript: it calls the node's HTTP/JSON API and its
// console endpoints same-origin with the operator's token (kept in
// sessionStorage) as Authorization: Bearer, and renders at most one
// animation frame's worth of changes at a time.
package console
