//go:build !estargz_static

package estargz

// The default: the shared library, found through pkg-config (estargz.pc,
// installed by cargo-c), and loaded at run time.

// #cgo pkg-config: estargz
import "C"
