// Package estargz is the Go binding of libestargz (estargz-rs), a builder
// and verifying reader of eStargz, the lazily pullable container-layer
// format of containerd's stargz-snapshotter.
//
// It wraps the C ABI (estargz.h) with cgo and links the library through
// pkg-config ("#cgo pkg-config: estargz"): install libestargz with cargo-c
// first (see the repository's README, "Go bindings"). Built with
// -tags estargz_static, it links libestargz.a instead (found in the
// compiler's default directories, or through CGO_CFLAGS / CGO_LDFLAGS),
// and binaries need no libestargz.so at run time. Go 1.23 or later.
//
//   - Build converts a tar (or tar.gz) stream to an eStargz blob and
//     reports the digests and sizes of the layer descriptor.
//   - Open reads a blob through any io.ReaderAt; OpenPath reads a file;
//     OpenRemote reads a layer from an OCI registry lazily. Every byte a
//     Reader returns was verified against its chunk digest.
//   - Reader.FS presents the tree as an fs.FS.
//
// Names follow github.com/containerd/stargz-snapshotter/estargz where the
// concepts match (Build, WithChunkSize, Blob.TOCDigest, Reader.OpenFile,
// Reader.VerifyTOCDigest, ...); blobs are interchangeable with it in both
// directions.
//
// Failures are *Error values carrying the library's code; compare them
// with errors.Is against ErrNotFound, ErrDigestMismatch and the other
// sentinels. Readers are safe for concurrent use. Handles are freed by
// Close, or by a finalizer if Close is forgotten.
package estargz
