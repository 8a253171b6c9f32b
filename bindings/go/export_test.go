package estargz

// LiveHandles is the number of library handles and callback cells alive
// now, for leak checks.
func LiveHandles() int64 { return liveHandles.Load() }
