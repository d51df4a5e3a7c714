// Package examples holds two small programs that use the client library
// against a running registry (make run):
//
//   - service: serves gRPC (the standard health service) and registers
//     itself under a service name until interrupted;
//   - caller: dials "registry:///<service>" through the client's resolver
//     and calls the service over and over, printing which instance answered.
//
// See README.md, "Using the Go client".
package examples
