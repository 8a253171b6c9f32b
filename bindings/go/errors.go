package estargz

// #include <estargz.h>
import "C"

import (
	"errors"
	"io/fs"
)

// Code is a libestargz result code (estargz_result in estargz.h). The
// numbers are stable and equal the core library's error codes.
//
// A Code is an error itself: the sentinels ErrIO ... ErrUnauthorized are
// Codes, and errors.Is(err, ErrNotFound) holds for every *Error with that
// code.
type Code int32

// Result codes, one per estargz_result value.
const (
	CodeOK              Code = C.ESTARGZ_OK
	CodeIO              Code = C.ESTARGZ_IO
	CodeTruncated       Code = C.ESTARGZ_TRUNCATED
	CodeInvalidFooter   Code = C.ESTARGZ_INVALID_FOOTER
	CodeInvalidTOC      Code = C.ESTARGZ_INVALID_TOC
	CodeInvalidTar      Code = C.ESTARGZ_INVALID_TAR
	CodeCorrupt         Code = C.ESTARGZ_CORRUPT
	CodeDigestMismatch  Code = C.ESTARGZ_DIGEST_MISMATCH
	CodeUnsafePath      Code = C.ESTARGZ_UNSAFE_PATH
	CodeNotFound        Code = C.ESTARGZ_NOT_FOUND
	CodeWrongType       Code = C.ESTARGZ_WRONG_TYPE
	CodeUnsupported     Code = C.ESTARGZ_UNSUPPORTED
	CodeInvalidArgument Code = C.ESTARGZ_INVALID_ARGUMENT
	CodeLimitExceeded   Code = C.ESTARGZ_LIMIT_EXCEEDED
	CodeInternal        Code = C.ESTARGZ_INTERNAL
	CodeNetwork         Code = C.ESTARGZ_NETWORK
	CodeTimeout         Code = C.ESTARGZ_TIMEOUT
	CodeRegistry        Code = C.ESTARGZ_REGISTRY
	CodeUnauthorized    Code = C.ESTARGZ_UNAUTHORIZED
)

// Sentinels for errors.Is, one per failure code.
var (
	ErrIO              error = CodeIO
	ErrTruncated       error = CodeTruncated
	ErrInvalidFooter   error = CodeInvalidFooter
	ErrInvalidTOC      error = CodeInvalidTOC
	ErrInvalidTar      error = CodeInvalidTar
	ErrCorrupt         error = CodeCorrupt
	ErrDigestMismatch  error = CodeDigestMismatch
	ErrUnsafePath      error = CodeUnsafePath
	ErrNotFound        error = CodeNotFound
	ErrWrongType       error = CodeWrongType
	ErrUnsupported     error = CodeUnsupported
	ErrInvalidArgument error = CodeInvalidArgument
	ErrLimitExceeded   error = CodeLimitExceeded
	ErrInternal        error = CodeInternal
	ErrNetwork         error = CodeNetwork
	ErrTimeout         error = CodeTimeout
	ErrRegistry        error = CodeRegistry
	ErrUnauthorized    error = CodeUnauthorized
)

// String is the symbolic name, e.g. "ESTARGZ_DIGEST_MISMATCH".
func (c Code) String() string {
	return C.GoString(C.estargz_result_name(C.int32_t(c)))
}

// Error is the short description, e.g. "estargz: digest mismatch".
func (c Code) Error() string {
	return "estargz: " + C.GoString(C.estargz_result_description(C.int32_t(c)))
}

// Error is a failure reported by libestargz (or by these bindings, with the
// same codes).
type Error struct {
	Code Code
	// Message is the detailed message; for library failures it starts with
	// the C function that failed, e.g. "estargz_reader_lookup: not found: a/b".
	Message string
	// Cause is the Go error behind an ESTARGZ_IO failure of a callback,
	// when known: the io.Reader's or io.Writer's error, or the context's.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + " (" + e.Cause.Error() + ")"
	}
	return e.Message
}

// Unwrap returns the cause, so errors.Is(err, context.Canceled) works for
// cancelled builds and reads.
func (e *Error) Unwrap() error { return e.Cause }

// Is matches the Code sentinels, and the io/fs sentinels that mean the same:
// fs.ErrNotExist for CodeNotFound, fs.ErrInvalid for CodeInvalidArgument.
func (e *Error) Is(target error) bool {
	if c, ok := target.(Code); ok {
		return c == e.Code
	}
	switch target {
	case fs.ErrNotExist:
		return e.Code == CodeNotFound
	case fs.ErrInvalid:
		return e.Code == CodeInvalidArgument
	}
	return false
}

// ErrClosed is returned (wrapped) by every method of a closed Reader; it
// is fs.ErrClosed.
var ErrClosed = fs.ErrClosed

func errClosed(what string) error {
	return &closedError{what}
}

type closedError struct{ what string }

func (e *closedError) Error() string { return "estargz: " + e.what + " on a closed reader" }
func (e *closedError) Unwrap() error { return fs.ErrClosed }

// goError is a failure detected on the Go side, with a library code.
func goError(code Code, msg string) error {
	return &Error{Code: code, Message: "estargz: " + msg}
}

// causeOf attaches cause to a library *Error (if err is one and cause is
// not nil).
func causeOf(err, cause error) error {
	var e *Error
	if cause != nil && errors.As(err, &e) && e.Cause == nil {
		e.Cause = cause
	}
	return err
}
