package estargz

// Go functions the library calls back (through the trampolines in ffi.go).
// Userdata is a handle cell (newCell); no Go pointer is ever given to C to
// keep. Callbacks recover panics of the caller's readers and writers: a
// panic must not unwind through the library's frames.

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"syscall"
	"unsafe"
)

// buildIO is the state of one Build: its input, output and context, and
// the first Go error a callback saw (reported as the cause of ESTARGZ_IO).
type buildIO struct {
	ctx context.Context
	r   io.Reader
	w   io.Writer

	mu  sync.Mutex
	err error
}

func (b *buildIO) fail(err error) C.int {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	return errnoOf(err)
}

func (b *buildIO) cause() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// errnoOf picks the errno the library reports in its message.
func errnoOf(err error) C.int {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return C.int(syscall.ECANCELED)
	}
	return C.int(syscall.EIO)
}

func recovered(v any) error {
	return fmt.Errorf("estargz: callback panicked: %v", v)
}

//export esgzGoRead
func esgzGoRead(userdata unsafe.Pointer, buf *C.uint8_t, n C.size_t, outN *C.size_t) (rc C.int) {
	b := cellValue(userdata).(*buildIO)
	defer func() {
		if v := recover(); v != nil {
			rc = b.fail(recovered(v))
		}
	}()
	if err := b.ctx.Err(); err != nil {
		return b.fail(err)
	}
	p := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	// The library takes 0 bytes as the end of the input, so (0, nil)
	// answers of the reader are retried; io.ReadFull's bound on them is
	// io.ErrNoProgress after 100.
	for range 100 {
		m, err := b.r.Read(p)
		if m < 0 || m > len(p) {
			return b.fail(fmt.Errorf("estargz: io.Reader returned %d for a %d-byte buffer", m, len(p)))
		}
		if m > 0 {
			// An error with data is returned again by the next Read.
			*outN = C.size_t(m)
			return 0
		}
		if err == io.EOF {
			*outN = 0
			return 0
		}
		if err != nil {
			return b.fail(err)
		}
	}
	return b.fail(io.ErrNoProgress)
}

//export esgzGoWrite
func esgzGoWrite(userdata unsafe.Pointer, buf *C.uint8_t, n C.size_t, outN *C.size_t) (rc C.int) {
	b := cellValue(userdata).(*buildIO)
	defer func() {
		if v := recover(); v != nil {
			rc = b.fail(recovered(v))
		}
	}()
	if err := b.ctx.Err(); err != nil {
		return b.fail(err)
	}
	p := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	m, err := b.w.Write(p)
	if err != nil {
		return b.fail(err)
	}
	if m != len(p) {
		return b.fail(io.ErrShortWrite)
	}
	*outN = C.size_t(m)
	return 0
}

// source is the state of a Reader opened over an io.ReaderAt.
type source struct {
	ctx  context.Context
	r    io.ReaderAt
	size int64
}

//export esgzGoReadAt
func esgzGoReadAt(userdata unsafe.Pointer, buf *C.uint8_t, n C.size_t, off C.uint64_t, outN *C.size_t) (rc C.int) {
	defer func() {
		if recover() != nil {
			rc = C.int(syscall.EIO)
		}
	}()
	s := cellValue(userdata).(*source)
	if err := s.ctx.Err(); err != nil {
		return errnoOf(err)
	}
	if uint64(off) > math.MaxInt64 {
		return C.int(syscall.EINVAL)
	}
	p := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	m, err := s.r.ReadAt(p, int64(off))
	if m < 0 || m > len(p) {
		return C.int(syscall.EIO)
	}
	if m > 0 || err == nil || err == io.EOF {
		// A short count is fine: the library asks again for the rest, and
		// takes 0 at an offset inside the blob as an error.
		*outN = C.size_t(m)
		return 0
	}
	return errnoOf(err)
}

//export esgzGoRelease
func esgzGoRelease(userdata unsafe.Pointer) {
	freeCell(userdata)
}
