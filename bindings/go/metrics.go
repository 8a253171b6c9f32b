package estargz

// #include <estargz.h>
// #include <stdlib.h>
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// MetricsServer serves the process's counters (registry requests and
// bytes, fetch latency, caches, layers, background fetch, FUSE requests)
// to Prometheus at GET /metrics: the library's endpoint, the same one as
// `estargz-fuse store --metrics-address`. A process that mounts layers
// with Mount has the counters of its mounts.
type MetricsServer struct {
	mu      sync.Mutex
	p       *C.estargz_metrics_server
	address string
}

// ServeMetrics serves GET /metrics on address: "HOST:PORT" (port 0 picks
// a free one; see Address) or an absolute unix socket path (a socket file
// left by an earlier run is replaced). It serves until Close.
func ServeMetrics(address string) (*MetricsServer, error) {
	if err := noNUL("metrics address", address); err != nil {
		return nil, err
	}
	caddr := C.CString(address)
	defer C.free(unsafe.Pointer(caddr))
	var p *C.estargz_metrics_server
	if err := call(func() C.estargz_result { return C.estargz_metrics_serve(caddr, &p) }); err != nil {
		return nil, err
	}
	liveHandles.Add(1)
	var n C.size_t
	buf := make([]byte, 512)
	if err := call(func() C.estargz_result {
		return C.estargz_metrics_server_address(p, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	}); err != nil || int(n) >= len(buf) {
		C.estargz_metrics_server_free(p)
		liveHandles.Add(-1)
		if err == nil {
			err = goError(CodeInvalidArgument, "metrics address longer than 511 bytes")
		}
		return nil, err
	}
	s := &MetricsServer{p: p, address: string(buf[:n])}
	runtime.SetFinalizer(s, func(s *MetricsServer) { s.Close() })
	return s, nil
}

// Address is where the server listens: "127.0.0.1:PORT" with the port
// chosen for port 0, or the socket path ("" for a nil server).
func (s *MetricsServer) Address() string {
	if s == nil {
		return ""
	}
	return s.address
}

// Close stops the server (after the scrape it may be answering, at most
// 5 s) and removes the socket file it made. Closing twice, or a nil
// server, is a no-op.
func (s *MetricsServer) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil {
		C.estargz_metrics_server_free(s.p)
		s.p = nil
		liveHandles.Add(-1)
	}
	return nil
}

// RenderMetrics is the process's counters in the Prometheus text format,
// what GET /metrics answers.
func RenderMetrics() (string, error) {
	var n C.size_t
	if err := call(func() C.estargz_result { return C.estargz_metrics_render(nil, 0, &n) }); err != nil {
		return "", err
	}
	// The text can grow between the calls: retry with the new length.
	for {
		buf := make([]byte, int(n)+1024)
		want := C.size_t(len(buf) - 1)
		if err := call(func() C.estargz_result {
			return C.estargz_metrics_render((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
		}); err != nil {
			return "", err
		}
		if n <= want {
			return string(buf[:n]), nil
		}
	}
}
