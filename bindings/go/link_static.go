//go:build estargz_static

package estargz

// With -tags estargz_static: libestargz.a is linked into the binary, which
// then needs no libestargz.so at run time. The name is spelled with its
// suffix (-l:) because a plain -lestargz picks the shared library when
// both are installed, and pkg-config is not used because its -lestargz
// would do the same. The system libraries are the .pc file's Libs.private
// (libc left to the compiler). The header and the archive are searched in
// the compiler's default directories (/usr/local from `cargo cinstall`);
// for another prefix, set CGO_CFLAGS=-I<prefix>/include and
// CGO_LDFLAGS=-L<prefix>/lib.

// #cgo LDFLAGS: -l:libestargz.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
import "C"
