package client

// UseEndpoint makes the client use addr now, for tests.
func (c *Client) UseEndpoint(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = addr
}
