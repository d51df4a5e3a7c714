package node

import "testing"

func TestHTTPClientsCannotSetTheRegistrysOwnMetadata(t *testing.T) {
	for key, want := range map[string]bool{
		"Grpc-Metadata-X-Registry-Forwarded-By":  false,
		"Grpc-Metadata-X-Registry-Client-Addr":   false,
		"Grpc-Metadata-x-registry-gateway-token": false,
		"Grpc-Metadata-X-Request-Id":             true,
		"Authorization":                          true,
	} {
		if _, got := incomingHeaders(key); got != want {
			t.Errorf("header %s passed to gRPC: %v, want %v", key, got, want)
		}
	}
}
