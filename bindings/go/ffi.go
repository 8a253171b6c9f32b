package estargz

// The only file with C definitions: trampolines that give the Go callbacks
// of callbacks.go the exact C signatures, and the handle cells passed as
// callback userdata. (cgo forbids C definitions in files with //export.)
// How the library is linked: link_shared.go or link_static.go.

/*
#include <estargz.h>
#include <stdint.h>
#include <stdlib.h>

extern int esgzGoRead(void *userdata, uint8_t *buf, size_t len, size_t *out_n);
extern int esgzGoWrite(void *userdata, uint8_t *buf, size_t len, size_t *out_n);
extern int esgzGoReadAt(void *userdata, uint8_t *buf, size_t len, uint64_t offset, size_t *out_n);
extern void esgzGoRelease(void *userdata);

static int esgz_read_tramp(void *ud, uint8_t *buf, size_t len, size_t *out_n) {
	return esgzGoRead(ud, buf, len, out_n);
}

// The library never writes through buf; the cast only drops const for Go.
static int esgz_write_tramp(void *ud, const uint8_t *buf, size_t len, size_t *out_n) {
	return esgzGoWrite(ud, (uint8_t *)buf, len, out_n);
}

static int esgz_read_at_tramp(void *ud, uint8_t *buf, size_t len, uint64_t offset, size_t *out_n) {
	return esgzGoReadAt(ud, buf, len, offset, out_n);
}

static void esgz_release_tramp(void *ud) {
	esgzGoRelease(ud);
}

static estargz_result esgz_builder_set_input_go(estargz_builder *b, void *cell) {
	return estargz_builder_set_input_callback(b, esgz_read_tramp, cell);
}

static estargz_result esgz_builder_set_output_go(estargz_builder *b, void *cell) {
	return estargz_builder_set_output_callback(b, esgz_write_tramp, cell);
}

static estargz_result esgz_reader_open_go(void *cell, uint64_t size,
		const estargz_open_options *opts, estargz_reader **out) {
	return estargz_reader_open_callback(esgz_read_at_tramp, esgz_release_tramp, cell, size, opts, out);
}

// A cell in C memory holding a runtime/cgo.Handle: C keeps a pointer to C
// memory only, never a Go pointer, and the handle value never sits in a Go
// unsafe.Pointer (small integers there upset the garbage collector).
static void *esgz_cell_new(uintptr_t h) {
	uintptr_t *cell = malloc(sizeof *cell);
	if (cell != NULL) *cell = h;
	return cell;
}

static uintptr_t esgz_cell_get(void *cell) { return *(uintptr_t *)cell; }
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync/atomic"
	"unsafe"
)

// liveHandles counts C handles (readers, builders, open and remote
// options, build results) and callback cells that exist right now; tests
// check it returns to where it was.
var liveHandles atomic.Int64

// newCell wraps v in a handle cell for use as callback userdata. The cell
// is released by freeCell, exactly once.
func newCell(v any) unsafe.Pointer {
	h := cgo.NewHandle(v)
	p := C.esgz_cell_new(C.uintptr_t(h))
	if p == nil {
		h.Delete()
		panic("estargz: out of memory")
	}
	liveHandles.Add(1)
	return p
}

func cellValue(p unsafe.Pointer) any {
	return cgo.Handle(C.esgz_cell_get(p)).Value()
}

func freeCell(p unsafe.Pointer) {
	cgo.Handle(C.esgz_cell_get(p)).Delete()
	C.free(p)
	liveHandles.Add(-1)
}

// call runs f, a call into the library, and turns a failure into an
// *Error carrying the message the library kept for the calling thread. The
// goroutine stays on one OS thread from the call to the message read, since
// the message is per thread.
func call(f func() C.estargz_result) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := f()
	if rc == C.ESTARGZ_OK {
		return nil
	}
	return &Error{Code: Code(rc), Message: lastError()}
}

// lastError reads the calling thread's last-error message.
func lastError() string {
	var buf [512]C.char
	var n C.size_t
	C.estargz_last_error(&buf[0], C.size_t(len(buf)), &n)
	if int(n) < len(buf) {
		return C.GoStringN(&buf[0], C.int(n))
	}
	big := make([]byte, int(n)+1)
	C.estargz_last_error((*C.char)(unsafe.Pointer(&big[0])), C.size_t(len(big)), &n)
	return string(big[:n])
}

// Go entry points of the trampolines (their C definitions are visible in
// this file only).

func builderSetInputGo(b *C.estargz_builder, cell unsafe.Pointer) C.estargz_result {
	return C.esgz_builder_set_input_go(b, cell)
}

func builderSetOutputGo(b *C.estargz_builder, cell unsafe.Pointer) C.estargz_result {
	return C.esgz_builder_set_output_go(b, cell)
}

// readerOpenGo opens a reader over a handle cell; the library owns the
// cell from here on, and frees it through esgzGoRelease (also on failure).
func readerOpenGo(cell unsafe.Pointer, size uint64, opts *C.estargz_open_options, out **C.estargz_reader) C.estargz_result {
	return C.esgz_reader_open_go(cell, C.uint64_t(size), opts, out)
}

// Version is the version of the loaded libestargz, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.estargz_version())
}

// noNUL rejects strings that C would silently cut at a NUL byte (a path
// "a\x00b" must not look up "a").
func noNUL(what, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return goError(CodeInvalidArgument, fmt.Sprintf("%s %q contains a NUL byte", what, s))
	}
	return nil
}
