package client

import "slices"

// UseEndpoint makes the client use addr now, and start its next watch on
// it when it is in the read pool, for tests.
func (c *Client) UseEndpoint(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = addr
	if pool, _ := c.pool(true); slices.Contains(pool, addr) {
		c.nextWatch = slices.Index(pool, addr)
	}
}
