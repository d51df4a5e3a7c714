package node

import "testing"

func TestTheGatewayDialsAnAddressThatExistsWhenTheNodeListensOnAll(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:7001", "127.0.0.1:7001"},
		{"0.0.0.0:7001", "127.0.0.1:7001"},
		// How a dual-stack listener on 0.0.0.0 or :7001 reports itself. A
		// container often has no ::1: localhost resolves to both.
		{"[::]:7001", "localhost:7001"},
	}
	for _, tt := range tests {
		cc, err := dialSelf(tt.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := cc.Target(); got != tt.want {
			t.Errorf("dialSelf(%q) dials %q, want %q", tt.listen, got, tt.want)
		}
		cc.Close()
	}
}
