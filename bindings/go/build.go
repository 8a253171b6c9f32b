package estargz

// #include <estargz.h>
// #include <stdlib.h>
import "C"

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"unsafe"
)

// Option configures Build. The defaults are the Go reference's: 4 MiB
// chunks, gzip level 9, embedded TOC, no prioritized files.
type Option func(*buildOptions) error

type buildOptions struct {
	ctx               context.Context
	format            string
	chunkSize         int
	level             int
	levelSet          bool
	minChunkSize      int
	prioritized       []string
	missedPrioritized *[]string
	externalTOC       bool
	keepDiffID        bool
	threads           int
	tempDir           string
}

// WithChunkSize sets the chunk size in bytes: files larger than this are
// split into chunks fetched and verified separately.
func WithChunkSize(size int) Option {
	return func(o *buildOptions) error {
		if size < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("chunk size %d is negative", size))
		}
		o.chunkSize = size
		return nil
	}
}

// WithFormat sets the layer format: FormatEStargz (the default),
// FormatZstdChunked (v2, containers/storage's: content-defined chunks, a
// tar-split, the input tar's DiffID; no prioritized files) or
// FormatZstdChunkedV1 (stargz-snapshotter's).
func WithFormat(format string) Option {
	return func(o *buildOptions) error {
		o.format = format
		return nil
	}
}

// WithCompressionLevel sets the compression level: for eStargz 0-9 as in
// compress/gzip (default 9), 10-12 spend extra effort; for zstd:chunked
// zstd's 1-22 (default 10). Build refuses a level outside its format's range.
func WithCompressionLevel(level int) Option {
	return func(o *buildOptions) error {
		if level < 0 || level > 22 {
			return goError(CodeInvalidArgument, fmt.Sprintf("compression level %d is not in 0-22", level))
		}
		o.level, o.levelSet = level, true
		return nil
	}
}

// WithMinChunkSize packs small files into shared gzip members of at least
// this compressed size (the TOC's innerOffset); 0 turns it off.
func WithMinChunkSize(size int) Option {
	return func(o *buildOptions) error {
		if size < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("min chunk size %d is negative", size))
		}
		o.minChunkSize = size
		return nil
	}
}

// WithPrioritizedFiles puts these files (tar paths, e.g. "usr/bin/app")
// first in the blob, in this order, followed by the prefetch landmark. A
// file missing from the input fails the build unless
// WithAllowMissingPrioritized is given.
func WithPrioritizedFiles(files []string) Option {
	return func(o *buildOptions) error {
		for _, f := range files {
			if err := noNUL("prioritized file", f); err != nil {
				return err
			}
		}
		o.prioritized = append(o.prioritized, files...)
		return nil
	}
}

// WithAllowMissingPrioritized tolerates prioritized files missing from the
// input; their names are stored in *missed (if not nil) after the build.
func WithAllowMissingPrioritized(missed *[]string) Option {
	return func(o *buildOptions) error {
		if missed == nil {
			missed = new([]string)
		}
		o.missedPrioritized = missed
		return nil
	}
}

// WithContext makes the build observe ctx: it fails with an error wrapping
// ctx.Err() at the next read of the input or write of the output after ctx
// is done.
func WithContext(ctx context.Context) Option {
	return func(o *buildOptions) error {
		if ctx == nil {
			return goError(CodeInvalidArgument, "nil context")
		}
		o.ctx = ctx
		return nil
	}
}

// WithExternalTOC keeps the TOC out of the blob (46-byte footer); the TOC
// (the external TOC data) is returned by Blob.ExternalTOCData and must be
// given to Open with WithExternalTOCData.
func WithExternalTOC() Option {
	return func(o *buildOptions) error {
		o.externalTOC = true
		return nil
	}
}

// WithKeepDiffID makes the build lossless: the decompressed blob is the
// input tar byte for byte, so the DiffID is the digest of the input tar.
// It needs WithExternalTOC and no prioritized files.
func WithKeepDiffID() Option {
	return func(o *buildOptions) error {
		o.keepDiffID = true
		return nil
	}
}

// WithThreads sets the number of compression threads (0, the default,
// means all CPUs). The output is the same for any number.
func WithThreads(n int) Option {
	return func(o *buildOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("thread count %d is negative", n))
		}
		o.threads = n
		return nil
	}
}

// WithTempDir sets the directory for the temporary copy of the input and
// for the blob Build returns (default: os.TempDir()).
func WithTempDir(dir string) Option {
	return func(o *buildOptions) error {
		o.tempDir = dir
		return noNUL("temporary directory", dir)
	}
}

// Blob is a built eStargz blob: an unlinked temporary file (read it with
// Read, ReadAt or Seek; Close releases it) plus the digests and sizes a
// layer descriptor needs.
type Blob struct {
	f                *os.File
	digest           string
	tocDigest        string
	diffID           string
	size             int64
	uncompressedSize int64
	tocOffset        int64
	tocEntries       int
	externalTOCData  []byte
	format           string
	mediaType        string
	manifestChecksum string
	manifestPosition *FramePosition
	tarSplitPosition *FramePosition
	annotations      map[string]string
}

// FramePosition is where a zstd:chunked frame's payload is in the blob: the
// TOC ("manifest") or v2's tar-split, as the footer and the position
// annotations say.
type FramePosition struct {
	// Offset is the blob offset of the zstd-compressed payload (its
	// skippable frame starts 8 bytes before).
	Offset int64
	// CompressedLen is the payload's size in bytes.
	CompressedLen int64
	// UncompressedLen is the size it decompresses to.
	UncompressedLen int64
}

func framePosition(p C.estargz_frame_position) *FramePosition {
	return &FramePosition{
		Offset:          int64(p.offset),
		CompressedLen:   int64(p.compressed_len),
		UncompressedLen: int64(p.uncompressed_len),
	}
}

// Read reads the blob sequentially (from the start, initially).
func (b *Blob) Read(p []byte) (int, error) { return b.f.Read(p) }

// ReadAt reads the blob at an offset.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// Seek sets the offset of the next Read.
func (b *Blob) Seek(offset int64, whence int) (int64, error) { return b.f.Seek(offset, whence) }

// Close releases the blob's file.
func (b *Blob) Close() error { return b.f.Close() }

// Digest is the blob digest ("sha256:..."), the layer digest.
func (b *Blob) Digest() string { return b.digest }

// TOCDigest is the TOC digest, the value of the layer annotation
// "containerd.io/snapshot/stargz/toc.digest".
func (b *Blob) TOCDigest() string { return b.tocDigest }

// DiffID is the digest of the decompressed blob.
func (b *Blob) DiffID() string { return b.diffID }

// CompressedSize is the size of the blob in bytes.
func (b *Blob) CompressedSize() int64 { return b.size }

// UncompressedSize is the size of the decompressed blob, the value of the
// layer annotation "io.containers.estargz.uncompressed-size".
func (b *Blob) UncompressedSize() int64 { return b.uncompressedSize }

// HasExternalTOC tells whether the build kept the TOC out of the blob
// (WithExternalTOC).
func (b *Blob) HasExternalTOC() bool { return b.externalTOCData != nil }

// TOCOffset is the blob offset of the embedded TOC member (0 when
// HasExternalTOC).
func (b *Blob) TOCOffset() int64 { return b.tocOffset }

// TOCEntries is the number of TOC entries.
func (b *Blob) TOCEntries() int { return b.tocEntries }

// ExternalTOCData is the TOC gzip member of a build WithExternalTOC (nil
// otherwise); store it next to the blob.
func (b *Blob) ExternalTOCData() []byte { return b.externalTOCData }

// Format is the format built, by the name WithFormat takes:
// FormatEStargz, FormatZstdChunked (v2) or FormatZstdChunkedV1.
func (b *Blob) Format() string { return b.format }

// MediaType is the layer descriptor's media type: MediaTypeLayerZstd for
// zstd:chunked, MediaTypeLayerGzip for eStargz.
func (b *Blob) MediaType() string { return b.mediaType }

// ManifestChecksum is the zstd:chunked manifest checksum ("sha256:..." of
// the compressed TOC), the value of the "...zstd-chunked.manifest-checksum"
// annotation; "" for eStargz.
func (b *Blob) ManifestChecksum() string { return b.manifestChecksum }

// ManifestPosition is where the compressed TOC of a zstd:chunked blob is
// (the "...manifest-position" annotation); false for eStargz.
func (b *Blob) ManifestPosition() (FramePosition, bool) {
	if b.manifestPosition == nil {
		return FramePosition{}, false
	}
	return *b.manifestPosition, true
}

// TarSplitPosition is where the compressed tar-split of a zstd:chunked v2
// blob is (the "...tarsplit-position" annotation); false otherwise.
func (b *Blob) TarSplitPosition() (FramePosition, bool) {
	if b.tarSplitPosition == nil {
		return FramePosition{}, false
	}
	return *b.tarSplitPosition, true
}

// Annotations are what the layer descriptor should carry (a new map each
// call): eStargz the TOC digest and uncompressed size; zstd:chunked v1 those
// and its manifest checksum and position; v2 only containers/storage's
// manifest checksum, manifest and tar-split positions.
func (b *Blob) Annotations() map[string]string {
	out := make(map[string]string, len(b.annotations))
	for k, v := range b.annotations {
		out[k] = v
	}
	return out
}

// Layer media types (Blob.MediaType).
const (
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
)

// TOC annotation keys of a layer descriptor.
const (
	TOCJSONDigestAnnotation         = "containerd.io/snapshot/stargz/toc.digest"
	StoreUncompressedSizeAnnotation = "io.containers.estargz.uncompressed-size"
)

// Build converts a tar stream (plain or gzip-compressed) read from r to an
// eStargz blob. The blob is kept in an unlinked temporary file; close it
// when done.
func Build(r io.Reader, opts ...Option) (*Blob, error) {
	o := buildOptions{ctx: context.Background()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if r == nil {
		return nil, goError(CodeInvalidArgument, "Build: nil io.Reader")
	}
	if err := o.ctx.Err(); err != nil {
		return nil, err
	}

	f, err := os.CreateTemp(o.tempDir, "estargz-blob-*")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: the blob lives as long as the file is open, and
	// nothing is left behind whatever happens.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	blob, err := build(r, f, &o)
	if err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	blob.f = f
	return blob, nil
}

// builder owns one estargz_builder.
type builder struct {
	ptr *C.estargz_builder
}

func newBuilder() (*builder, error) {
	b := &builder{}
	if err := call(func() C.estargz_result { return C.estargz_builder_new(&b.ptr) }); err != nil {
		return nil, err
	}
	liveHandles.Add(1)
	return b, nil
}

func (b *builder) free() {
	C.estargz_builder_free(b.ptr)
	b.ptr = nil
	liveHandles.Add(-1)
}

func (b *builder) configure(o *buildOptions) error {
	p := b.ptr
	steps := []func() C.estargz_result{
		func() C.estargz_result { return C.estargz_builder_set_chunk_size(p, C.uint64_t(o.chunkSize)) },
		func() C.estargz_result { return C.estargz_builder_set_min_chunk_size(p, C.uint64_t(o.minChunkSize)) },
		func() C.estargz_result { return C.estargz_builder_set_external_toc(p, C.bool(o.externalTOC)) },
		func() C.estargz_result { return C.estargz_builder_set_keep_diff_id(p, C.bool(o.keepDiffID)) },
		func() C.estargz_result { return C.estargz_builder_set_threads(p, C.size_t(o.threads)) },
		func() C.estargz_result {
			return C.estargz_builder_set_allow_missing_prioritized(p, C.bool(o.missedPrioritized != nil))
		},
	}
	if o.format != "" {
		steps = append(steps, func() C.estargz_result {
			s := C.CString(o.format)
			defer C.free(unsafe.Pointer(s))
			return C.estargz_builder_set_format(p, s)
		})
	}
	if o.levelSet {
		steps = append(steps, func() C.estargz_result { return C.estargz_builder_set_compression_level(p, C.uint32_t(o.level)) })
	}
	if o.tempDir != "" {
		steps = append(steps, func() C.estargz_result {
			s := C.CString(o.tempDir)
			defer C.free(unsafe.Pointer(s))
			return C.estargz_builder_set_temp_dir(p, s)
		})
	}
	for _, f := range o.prioritized {
		steps = append(steps, func() C.estargz_result {
			s := C.CString(f)
			defer C.free(unsafe.Pointer(s))
			return C.estargz_builder_add_prioritized_file(p, s)
		})
	}
	for _, step := range steps {
		if err := call(step); err != nil {
			return err
		}
	}
	return nil
}

func build(r io.Reader, w io.Writer, o *buildOptions) (*Blob, error) {
	b, err := newBuilder()
	if err != nil {
		return nil, err
	}
	defer b.free()
	if err := b.configure(o); err != nil {
		return nil, err
	}

	// The cell is borrowed by the builder until estargz_builder_run returns.
	state := &buildIO{ctx: o.ctx, r: r, w: w}
	cell := newCell(state)
	defer freeCell(cell)
	if err := call(func() C.estargz_result { return builderSetInputGo(b.ptr, cell) }); err != nil {
		return nil, err
	}
	if err := call(func() C.estargz_result { return builderSetOutputGo(b.ptr, cell) }); err != nil {
		return nil, err
	}
	var res *C.estargz_build_result
	err = call(func() C.estargz_result { return C.estargz_builder_run(b.ptr, &res) })
	runtime.KeepAlive(state)
	if err != nil {
		return nil, causeOf(err, state.cause())
	}
	liveHandles.Add(1)
	defer func() {
		C.estargz_build_result_free(res)
		liveHandles.Add(-1)
	}()

	blob := &Blob{
		digest:           C.GoString(C.estargz_build_result_blob_digest(res)),
		tocDigest:        C.GoString(C.estargz_build_result_toc_digest(res)),
		diffID:           C.GoString(C.estargz_build_result_diff_id(res)),
		size:             int64(C.estargz_build_result_blob_size(res)),
		uncompressedSize: int64(C.estargz_build_result_uncompressed_size(res)),
		tocEntries:       int(C.estargz_build_result_toc_entries(res)),
	}
	var off C.uint64_t
	if C.estargz_build_result_toc_offset(res, &off) {
		blob.tocOffset = int64(off)
	}
	blob.format = C.GoString(C.estargz_build_result_format(res))
	blob.mediaType = C.GoString(C.estargz_build_result_media_type(res))
	if p := C.estargz_build_result_manifest_checksum(res); p != nil {
		blob.manifestChecksum = C.GoString(p)
	}
	var pos C.estargz_frame_position
	if C.estargz_build_result_manifest_position(res, &pos) {
		blob.manifestPosition = framePosition(pos)
	}
	if C.estargz_build_result_tar_split_position(res, &pos) {
		blob.tarSplitPosition = framePosition(pos)
	}
	blob.annotations = map[string]string{}
	for i := C.size_t(0); ; i++ {
		var k, v *C.char
		if !C.estargz_build_result_annotation(res, i, &k, &v) {
			break
		}
		blob.annotations[C.GoString(k)] = C.GoString(v)
	}
	var n C.size_t
	if p := C.estargz_build_result_external_toc_data(res, &n); p != nil {
		blob.externalTOCData = C.GoBytes(unsafe.Pointer(p), C.int(n))
	}
	if o.missedPrioritized != nil {
		missed := []string{}
		count := int(C.estargz_build_result_missed_prioritized_count(res))
		for i := range count {
			missed = append(missed, C.GoString(C.estargz_build_result_missed_prioritized(res, C.size_t(i))))
		}
		*o.missedPrioritized = missed
	}
	return blob, nil
}
