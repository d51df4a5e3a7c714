package fsm

// ScanService calls fn for every instance of service, in no particular
// order, under the read lock, without copying or sorting them, and reports
// whether the service has any instance. fn must be quick, must not call the
// FSM and must not keep the pointer or write through it (strings and
// Metadata, never mutated once stored, may be kept). The DNS interface reads
// this way: it shuffles its answers, so GetService's sorted copy would be
// wasted work on every query.
func (f *FSM) ScanService(service string, fn func(*Instance)) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := f.state.services[service]
	for _, pos := range ids {
		fn(f.state.insts.at(pos))
	}
	return len(ids) > 0
}
