// Package tlsutil owns the registry's TLS: it creates a development CA and
// server and client certificates (ECDSA P-256), loads PEM files, and keeps
// a Source of *tls.Config that re-reads the certificate, key and CA when
// their files change or Reload is called, so that new connections use the
// new files with no restart.
//
// Two names mark a certificate's role in the cluster (Consul's
// verify_server_hostname idea): a node's certificate carries the DNS name
// ServerName and may act as TLS server and client; a client's certificate
// carries ClientName and may act as TLS client only. Nodes accept a peer
// (on the Raft port, and when they dial each other) only if its
// certificate chains to the CA and names ServerName, so that a client
// certificate from the same CA cannot pose as a node.
//
// It imports only the standard library, so that the client package may use
// it. A Source is safe for concurrent use; its watcher goroutine runs until
// Close.
package tlsutil
