package estargz

// #include <estargz.h>
// #include <stdlib.h>
import "C"

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// OpenOption configures Open and OpenPath.
type OpenOption func(*openOptions) error

type openOptions struct {
	ctx          context.Context
	tocDigest    string
	externalTOC  []byte
	maxTOCSize   int64
	maxChunkSize int64
	// The tree limits; 0 is the library's default.
	maxEntries         int64
	maxPathDepth       int64
	maxNameBytes       int64
	maxMemberInflation int64
}

// WithExpectedTOCDigest makes opening fail with ErrDigestMismatch unless
// the blob's TOC digest is d (the layer's
// "containerd.io/snapshot/stargz/toc.digest" annotation); anything but
// "sha256:" and 64 lowercase hex digits is ErrInvalidArgument.
func WithExpectedTOCDigest(d string) OpenOption {
	return func(o *openOptions) error {
		o.tocDigest = d
		return noNUL("TOC digest", d)
	}
}

// WithExternalTOCData gives the external TOC data, the TOC gzip member of
// a blob built WithExternalTOC (Blob.ExternalTOCData).
func WithExternalTOCData(toc []byte) OpenOption {
	return func(o *openOptions) error {
		o.externalTOC = toc
		return nil
	}
}

// WithMaxTOCSize bounds the TOC (compressed member and JSON) in bytes;
// larger ones fail with ErrLimitExceeded. 0 means the default, 1 GiB.
func WithMaxTOCSize(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max TOC size %d is negative", n))
		}
		o.maxTOCSize = n
		return nil
	}
}

// WithMaxChunkSize bounds a chunk in bytes; reading a larger one fails
// with ErrLimitExceeded. 0 means the default, 256 MiB.
func WithMaxChunkSize(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max chunk size %d is negative", n))
		}
		o.maxChunkSize = n
		return nil
	}
}

// WithMaxEntries bounds the TOC's entries, and the nodes of the file tree (directories the TOC
// only implies count too); a blob over it fails with ErrLimitExceeded.
// 0 means the default, 1,048,576.
func WithMaxEntries(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max entries %d is negative", n))
		}
		o.maxEntries = n
		return nil
	}
}

// WithMaxPathDepth bounds the components of one path; a blob over it fails with ErrLimitExceeded.
// 0 means the default, 2048.
func WithMaxPathDepth(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max path depth %d is negative", n))
		}
		o.maxPathDepth = n
		return nil
	}
}

// WithMaxNameBytes bounds the bytes of entry names plus link names over the whole TOC; a blob over it fails with ErrLimitExceeded.
// 0 means the default, 128 MiB.
func WithMaxNameBytes(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max name bytes %d is negative", n))
		}
		o.maxNameBytes = n
		return nil
	}
}

// WithMaxMemberInflation bounds how many times the chunk bytes it holds a gzip member may inflate to
// (beyond a 16 MiB allowance for headers); a blob over it fails with ErrLimitExceeded.
// 0 means the default, 64.
func WithMaxMemberInflation(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("max member inflation %d is negative", n))
		}
		o.maxMemberInflation = n
		return nil
	}
}

// WithReadContext ties the io.ReaderAt given to Open to ctx: once ctx is
// done, every read of the blob (opening, file reads, Verify) fails with an
// error wrapping ctx.Err(). Has no effect on OpenPath.
func WithReadContext(ctx context.Context) OpenOption {
	return func(o *openOptions) error {
		if ctx == nil {
			return goError(CodeInvalidArgument, "nil context")
		}
		o.ctx = ctx
		return nil
	}
}

// cOptions builds the C options; the caller frees them with
// freeOpenOptions.
func (o *openOptions) cOptions() (*C.estargz_open_options, error) {
	var p *C.estargz_open_options
	if err := call(func() C.estargz_result { return C.estargz_open_options_new(&p) }); err != nil {
		return nil, err
	}
	liveHandles.Add(1)
	var steps []func() C.estargz_result
	if o.tocDigest != "" {
		steps = append(steps, func() C.estargz_result {
			s := C.CString(o.tocDigest)
			defer C.free(unsafe.Pointer(s))
			return C.estargz_open_options_set_expected_toc_digest(p, s)
		})
	}
	if len(o.externalTOC) > 0 {
		steps = append(steps, func() C.estargz_result {
			// Copied by the library during the call.
			return C.estargz_open_options_set_external_toc_data(p, (*C.uint8_t)(unsafe.Pointer(&o.externalTOC[0])), C.size_t(len(o.externalTOC)))
		})
	}
	steps = append(steps,
		func() C.estargz_result { return C.estargz_open_options_set_max_toc_size(p, C.uint64_t(o.maxTOCSize)) },
		func() C.estargz_result {
			return C.estargz_open_options_set_max_chunk_size(p, C.uint64_t(o.maxChunkSize))
		},
		func() C.estargz_result { return C.estargz_open_options_set_max_entries(p, C.uint64_t(o.maxEntries)) },
		func() C.estargz_result {
			return C.estargz_open_options_set_max_path_depth(p, C.uint64_t(o.maxPathDepth))
		},
		func() C.estargz_result {
			return C.estargz_open_options_set_max_name_bytes(p, C.uint64_t(o.maxNameBytes))
		},
		func() C.estargz_result {
			return C.estargz_open_options_set_max_member_inflation(p, C.uint64_t(o.maxMemberInflation))
		},
	)
	for _, step := range steps {
		if err := call(step); err != nil {
			freeOpenOptions(p)
			return nil, err
		}
	}
	return p, nil
}

func freeOpenOptions(p *C.estargz_open_options) {
	C.estargz_open_options_free(p)
	liveHandles.Add(-1)
}

func applyOpenOptions(opts []OpenOption) (*openOptions, error) {
	o := &openOptions{ctx: context.Background()}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Reader reads an eStargz blob. Every byte read from a file was verified
// against its chunk digest first. A Reader is safe for concurrent use;
// Close it when done (a finalizer frees a forgotten one).
type Reader struct {
	// mu guards ptr: methods hold it shared around each library call, so
	// Close (exclusive) never frees the handle under a running call.
	mu  sync.RWMutex
	ptr *C.estargz_reader
	// ctx is the read context of a reader over an io.ReaderAt, to report
	// it as the cause of failed reads.
	ctx       context.Context
	tocDigest string
}

// Open opens the eStargz blob of size bytes read through r, which must be
// safe for concurrent use (the library reads from several threads). The
// blob's TOC is read and checked at once; file contents are read lazily.
// r must stay usable until the Reader is closed.
func Open(r io.ReaderAt, size int64, opts ...OpenOption) (*Reader, error) {
	o, err := applyOpenOptions(opts)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, goError(CodeInvalidArgument, "Open: nil io.ReaderAt")
	}
	if size < 0 {
		return nil, goError(CodeInvalidArgument, fmt.Sprintf("Open: negative size %d", size))
	}
	copts, err := o.cOptions()
	if err != nil {
		return nil, err
	}
	defer freeOpenOptions(copts)
	cell := newCell(&source{ctx: o.ctx, r: r, size: size})
	var p *C.estargz_reader
	err = call(func() C.estargz_result { return readerOpenGo(cell, uint64(size), copts, &p) })
	if err != nil {
		return nil, causeOf(err, o.ctx.Err())
	}
	return newReader(p, o.ctx), nil
}

// OpenPath opens the eStargz blob in the file at path. The file must not
// change while the Reader is open.
func OpenPath(path string, opts ...OpenOption) (*Reader, error) {
	o, err := applyOpenOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := noNUL("path", path); err != nil {
		return nil, err
	}
	copts, err := o.cOptions()
	if err != nil {
		return nil, err
	}
	defer freeOpenOptions(copts)
	s := C.CString(path)
	defer C.free(unsafe.Pointer(s))
	var p *C.estargz_reader
	if err := call(func() C.estargz_result { return C.estargz_reader_open_path(s, copts, &p) }); err != nil {
		return nil, err
	}
	return newReader(p, context.Background()), nil
}

func newReader(p *C.estargz_reader, ctx context.Context) *Reader {
	liveHandles.Add(1)
	r := &Reader{ptr: p, ctx: ctx, tocDigest: C.GoString(C.estargz_reader_toc_digest(p))}
	runtime.SetFinalizer(r, (*Reader).Close)
	return r
}

// Close frees the reader. Calls made after Close fail with an error
// wrapping ErrClosed; Close waits for calls in progress. Closing twice is
// a no-op.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr != nil {
		// For a reader over an io.ReaderAt this also releases the
		// callback's handle (esgzGoRelease).
		C.estargz_reader_free(r.ptr)
		r.ptr = nil
		liveHandles.Add(-1)
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// with runs f with the live handle, holding the shared lock.
func (r *Reader) with(what string, f func(p *C.estargz_reader) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return errClosed(what)
	}
	err := f(r.ptr)
	runtime.KeepAlive(r)
	if err != nil && r.ctx != nil {
		err = causeOf(err, r.ctx.Err())
	}
	return err
}

// TOCDigest is the digest of the blob's TOC ("sha256:..."), computed at
// open.
func (r *Reader) TOCDigest() string { return r.tocDigest }

// VerifyTOCDigest checks the TOC digest against tocDigest (the layer's
// "containerd.io/snapshot/stargz/toc.digest" annotation): nil or an error
// matching ErrDigestMismatch (ErrInvalidArgument when tocDigest is not
// "sha256:" and 64 lowercase hex). Chunks are verified on every read regardless;
// Verify checks them all now.
func (r *Reader) VerifyTOCDigest(tocDigest string) error {
	if err := noNUL("TOC digest", tocDigest); err != nil {
		return err
	}
	return r.with("VerifyTOCDigest", func(p *C.estargz_reader) error {
		s := C.CString(tocDigest)
		defer C.free(unsafe.Pointer(s))
		return call(func() C.estargz_result { return C.estargz_reader_verify_toc_digest(p, s) })
	})
}

// Verify checks every chunk of every file against its digest (in
// parallel) and returns the number of file bytes verified.
func (r *Reader) Verify() (int64, error) {
	var n C.uint64_t
	err := r.with("Verify", func(p *C.estargz_reader) error {
		return call(func() C.estargz_result { return C.estargz_reader_verify(p, &n) })
	})
	return int64(n), err
}

// Footer kinds (Info.FooterKind).
const (
	FooterEStargz     = "estargz"
	FooterExternalTOC = "external-toc"
	FooterLegacy      = "legacy-stargz"
	FooterZstdChunked = "zstd:chunked"
)

// Layer formats (Info.Format; WithFormat builds FormatEStargz,
// FormatZstdChunked (v2) and FormatZstdChunkedV1).
const (
	FormatEStargz       = "estargz"
	FormatStargz        = "stargz"
	FormatZstdChunked   = "zstd:chunked"
	FormatZstdChunkedV1 = "zstd:chunked-v1"
)

// Info describes an open blob.
type Info struct {
	BlobSize int64
	// HasExternalTOC tells whether the TOC is kept out of the blob.
	HasExternalTOC bool
	// TOCOffset is the blob offset of the TOC member (0 when HasExternalTOC).
	TOCOffset  int64
	TOCEntries int
	// EntryCount is the number of entries in the tree, the root included.
	EntryCount int
	FooterKind string
	FooterSize int
	// Format is the layer format: FormatEStargz, FormatStargz or
	// FormatZstdChunked.
	Format string
	// ZstdChunkedGeneration is 1 or 2 for zstd:chunked, 0 otherwise.
	ZstdChunkedGeneration int
	// ManifestChecksum is the zstd:chunked manifest checksum ("sha256:..."
	// of the compressed TOC, computed from the blob); "" otherwise.
	ManifestChecksum string
	// ManifestPosition is where the compressed TOC of a zstd:chunked blob
	// is; nil otherwise.
	ManifestPosition *FramePosition
	// TarSplitPosition is where the compressed tar-split of a zstd:chunked
	// v2 blob is; nil otherwise.
	TarSplitPosition *FramePosition
}

// Info returns the blob's size, footer and TOC facts.
func (r *Reader) Info() (Info, error) {
	var ci C.estargz_blob_info
	ci.struct_size = C.size_t(unsafe.Sizeof(ci)) // the struct_size rule of estargz.h
	var checksum string
	var manifest, tarSplit *FramePosition
	err := r.with("Info", func(p *C.estargz_reader) error {
		if err := call(func() C.estargz_result { return C.estargz_reader_info(p, &ci) }); err != nil {
			return err
		}
		if s := C.estargz_reader_manifest_checksum(p); s != nil {
			checksum = C.GoString(s)
		}
		var pos C.estargz_frame_position
		if C.estargz_reader_manifest_position(p, &pos) {
			manifest = framePosition(pos)
		}
		if C.estargz_reader_tar_split_position(p, &pos) {
			tarSplit = framePosition(pos)
		}
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	kind := FooterEStargz
	switch ci.footer_kind {
	case C.ESTARGZ_FOOTER_EXTERNAL_TOC:
		kind = FooterExternalTOC
	case C.ESTARGZ_FOOTER_LEGACY:
		kind = FooterLegacy
	case C.ESTARGZ_FOOTER_ZSTD_CHUNKED:
		kind = FooterZstdChunked
	}
	format := FormatEStargz
	switch ci.format {
	case C.ESTARGZ_FORMAT_STARGZ:
		format = FormatStargz
	case C.ESTARGZ_FORMAT_ZSTD_CHUNKED:
		format = FormatZstdChunked
	}
	return Info{
		BlobSize:              int64(ci.blob_size),
		HasExternalTOC:        bool(ci.has_external_toc),
		TOCOffset:             int64(ci.toc_offset),
		TOCEntries:            int(ci.toc_entries),
		EntryCount:            int(ci.entry_count),
		FooterKind:            kind,
		FooterSize:            int(ci.footer_size),
		Format:                format,
		ZstdChunkedGeneration: int(ci.zstd_chunked_generation),
		ManifestChecksum:      checksum,
		ManifestPosition:      manifest,
		TarSplitPosition:      tarSplit,
	}, nil
}

// Entry types (Entry.Type), as in the TOC.
const (
	TypeDir      = "dir"
	TypeReg      = "reg"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// Entry is the metadata of one file in the blob. For a hard link, Type is
// TypeHardlink, LinkName is the path of the file holding the data, and the
// other fields describe that file.
type Entry struct {
	// Path is the cleaned path in the layer ("a/b"; "" for the root).
	Path string
	// Name is the base name, the last element of Path ("b"; "" for the root).
	Name      string
	Type      string
	Size      int64
	Mode      fs.FileMode
	UID, GID  int
	UserName  string
	GroupName string
	ModTime   time.Time
	// LinkName is a symlink's target as stored, or a hard link's target path.
	LinkName           string
	DevMajor, DevMinor int
	Xattrs             map[string][]byte
	// NumLink is the link count: hard links to the data, or 2 + the
	// number of subdirectories for a directory.
	NumLink int

	id       uint64
	targetID uint64
}

// IsRegular reports whether the entry's data is a regular file (a regular
// file or a hard link to one).
func (e *Entry) IsRegular() bool { return e.Mode.IsRegular() }

// Lookup returns the entry at path (any spelling: "a/b", "/a/b", "./a//b";
// "" is the root). Symlinks are not followed; the error matches ErrNotFound
// (and fs.ErrNotExist) when there is no such entry.
func (r *Reader) Lookup(path string) (*Entry, error) {
	if err := noNUL("path", path); err != nil {
		return nil, err
	}
	var e *Entry
	err := r.with("Lookup", func(p *C.estargz_reader) error {
		var ce C.estargz_entry
		ce.struct_size = C.size_t(unsafe.Sizeof(ce)) // the struct_size rule of estargz.h
		s := C.CString(path)
		defer C.free(unsafe.Pointer(s))
		if err := call(func() C.estargz_result { return C.estargz_reader_lookup(p, s, &ce) }); err != nil {
			return err
		}
		var d entryDetails
		err := d.fetch(func(ce *C.estargz_entry, cd *C.estargz_entry_details, b *C.char, n C.size_t, outN *C.size_t) C.estargz_result {
			return C.estargz_reader_entry_details(p, ce.id, ce, cd, b, n, outN)
		}, ce)
		if err != nil {
			return err
		}
		e, err = d.entry(p)
		return err
	})
	return e, err
}

var typeNames = map[C.estargz_entry_type]string{
	C.ESTARGZ_ENTRY_DIR:      TypeDir,
	C.ESTARGZ_ENTRY_REG:      TypeReg,
	C.ESTARGZ_ENTRY_SYMLINK:  TypeSymlink,
	C.ESTARGZ_ENTRY_HARDLINK: TypeHardlink,
	C.ESTARGZ_ENTRY_CHAR:     TypeChar,
	C.ESTARGZ_ENTRY_BLOCK:    TypeBlock,
	C.ESTARGZ_ENTRY_FIFO:     TypeFifo,
}

// entryDetails is one entry as the *_details calls give it: metadata,
// string layout, and the strings in buf. One value is reused across a
// listing, so buf grows to the longest entry once.
type entryDetails struct {
	ce  C.estargz_entry
	cd  C.estargz_entry_details
	buf []byte
}

// detailsCall is estargz_reader_entry_details or
// estargz_dir_iter_next_details with all but the out arguments bound.
type detailsCall func(ce *C.estargz_entry, cd *C.estargz_entry_details, b *C.char, n C.size_t, outN *C.size_t) C.estargz_result

// fetch runs get (ce carries the id for the by-id call), growing buf and
// calling again when the strings do not fit: one cgo call per entry once
// buf is large enough.
func (d *entryDetails) fetch(get detailsCall, ce C.estargz_entry) error {
	if len(d.buf) == 0 {
		d.buf = make([]byte, 512)
	}
	for {
		d.ce = ce
		d.ce.struct_size = C.size_t(unsafe.Sizeof(d.ce)) // the struct_size rule of estargz.h
		d.cd.struct_size = C.size_t(unsafe.Sizeof(d.cd))
		var n C.size_t
		// d.buf is Go memory, written by the library only during the call.
		err := call(func() C.estargz_result {
			return get(&d.ce, &d.cd, (*C.char)(unsafe.Pointer(&d.buf[0])), C.size_t(len(d.buf)), &n)
		})
		if err != nil {
			return err
		}
		if int(n) <= len(d.buf) {
			return nil
		}
		d.buf = make([]byte, int(n))
	}
}

func (d *entryDetails) str(off, n C.size_t) string {
	return string(d.buf[int(off) : int(off)+int(n)])
}

// entry converts the fetched entry; its xattrs, if any, take one more call
// each.
func (d *entryDetails) entry(p *C.estargz_reader) (*Entry, error) {
	ce, cd := &d.ce, &d.cd
	e := &Entry{
		Path:      d.str(cd.path_offset, cd.path_len),
		Name:      d.str(cd.name_offset, cd.name_len),
		Type:      typeNames[ce.kind],
		Size:      int64(ce.size),
		UID:       int(ce.uid),
		GID:       int(ce.gid),
		UserName:  d.str(cd.user_name_offset, cd.user_name_len),
		GroupName: d.str(cd.group_name_offset, cd.group_name_len),
		ModTime:   time.Unix(int64(ce.mtime), 0),
		LinkName:  d.str(cd.link_name_offset, cd.link_name_len),
		DevMajor:  int(ce.dev_major),
		DevMinor:  int(ce.dev_minor),
		NumLink:   int(ce.nlink),
		id:        uint64(ce.id),
		targetID:  uint64(ce.target_id),
	}
	if ce.xattr_count > 0 {
		e.Xattrs = make(map[string][]byte, int(ce.xattr_count))
		for i := 0; i < int(ce.xattr_count); i++ {
			name, value, err := xattr(p, ce.id, i)
			if err != nil {
				return nil, err
			}
			e.Xattrs[name] = value
		}
	}
	e.Mode = fs.FileMode(ce.mode & 0o777)
	if ce.mode&0o4000 != 0 {
		e.Mode |= fs.ModeSetuid
	}
	if ce.mode&0o2000 != 0 {
		e.Mode |= fs.ModeSetgid
	}
	if ce.mode&0o1000 != 0 {
		e.Mode |= fs.ModeSticky
	}
	// For a hard link, the target's kind (so is the mode's type).
	switch cd.target_kind {
	case C.ESTARGZ_ENTRY_DIR:
		e.Mode |= fs.ModeDir
	case C.ESTARGZ_ENTRY_SYMLINK:
		e.Mode |= fs.ModeSymlink
	case C.ESTARGZ_ENTRY_CHAR:
		e.Mode |= fs.ModeDevice | fs.ModeCharDevice
	case C.ESTARGZ_ENTRY_BLOCK:
		e.Mode |= fs.ModeDevice
	case C.ESTARGZ_ENTRY_FIFO:
		e.Mode |= fs.ModeNamedPipe
	}
	return e, nil
}

// xattr copies the i-th extended attribute of entry id: one call when
// name and value fit the first buffers, else a second with their sizes.
func xattr(p *C.estargz_reader, id C.uint64_t, i int) (string, []byte, error) {
	name := make([]byte, 256)
	value := make([]byte, 1024)
	for {
		var nameN, valueN C.size_t
		// Go memory, written by the library only during the call.
		if err := call(func() C.estargz_result {
			return C.estargz_reader_entry_xattr(p, id, C.size_t(i),
				(*C.char)(unsafe.Pointer(&name[0])), C.size_t(len(name)), &nameN,
				(*C.uint8_t)(unsafe.Pointer(&value[0])), C.size_t(len(value)), &valueN)
		}); err != nil {
			return "", nil, err
		}
		// The name is NUL-terminated (snprintf style), the value is not.
		if int(nameN) < len(name) && int(valueN) <= len(value) {
			return string(name[:nameN]), value[:valueN:valueN], nil
		}
		name = make([]byte, int(nameN)+1)
		value = make([]byte, int(valueN)+1) // +1: never a zero-length buffer
	}
}

// ReadDir lists the directory at path (symlinks not followed), in name
// order.
func (r *Reader) ReadDir(path string) ([]*Entry, error) {
	dir, err := r.Lookup(path)
	if err != nil {
		return nil, err
	}
	return r.readDirID(dir.id)
}

func (r *Reader) readDirID(id uint64) ([]*Entry, error) {
	var list []*Entry
	err := r.with("ReadDir", func(p *C.estargz_reader) error {
		var it *C.estargz_dir_iter
		if err := call(func() C.estargz_result { return C.estargz_reader_open_dir(p, C.uint64_t(id), &it) }); err != nil {
			return err
		}
		defer C.estargz_dir_iter_free(it)
		var d entryDetails
		for {
			var done C.bool
			err := d.fetch(func(ce *C.estargz_entry, cd *C.estargz_entry_details, b *C.char, n C.size_t, outN *C.size_t) C.estargz_result {
				return C.estargz_dir_iter_next_details(it, ce, cd, b, n, outN, &done)
			}, C.estargz_entry{})
			if err != nil {
				return err
			}
			if done {
				return nil
			}
			e, err := d.entry(p)
			if err != nil {
				return err
			}
			list = append(list, e)
		}
	})
	return list, err
}

// OpenFile returns a reader of the regular file at path (hard links are
// followed, symlinks are not). Every byte is verified against its chunk
// digest before it is returned. The error matches ErrNotFound or
// ErrWrongType.
func (r *Reader) OpenFile(path string) (*io.SectionReader, error) {
	e, err := r.Lookup(path)
	if err != nil {
		return nil, err
	}
	if !e.IsRegular() {
		return nil, goError(CodeWrongType, fmt.Sprintf("OpenFile: %q is a %s, not a regular file", path, e.Type))
	}
	return io.NewSectionReader(&fileReader{r: r, id: e.targetID, size: e.Size}, 0, e.Size), nil
}

// fileReader reads one regular file through estargz_reader_read.
type fileReader struct {
	r    *Reader
	id   uint64
	size int64
}

func (f *fileReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, goError(CodeInvalidArgument, fmt.Sprintf("ReadAt: negative offset %d", off))
	}
	total := 0
	for total < len(b) {
		var n C.size_t
		err := f.r.with("ReadAt", func(p *C.estargz_reader) error {
			// b is Go memory, used by the library only during the call.
			return call(func() C.estargz_result {
				return C.estargz_reader_read(p, C.uint64_t(f.id), C.uint64_t(off+int64(total)),
					(*C.uint8_t)(unsafe.Pointer(&b[total])), C.size_t(len(b)-total), &n)
			})
		})
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, io.EOF
		}
		total += int(n)
	}
	return total, nil
}

// Extract flags.
const (
	// ExtractNoSameOwner skips applying owners (applied when running as root).
	ExtractNoSameOwner = C.ESTARGZ_EXTRACT_NO_SAME_OWNER
	// ExtractNoXattrs skips extended attributes.
	ExtractNoXattrs = C.ESTARGZ_EXTRACT_NO_XATTRS
	// ExtractLandmarks also writes the prefetch landmark files.
	ExtractLandmarks = C.ESTARGZ_EXTRACT_LANDMARKS
)

// ExtractStats counts what Extract wrote.
type ExtractStats struct {
	Files, Dirs, Others, Bytes int64
}

// Extract writes every entry, verified, under dir (created if missing).
// Nothing is written outside dir: entries that would escape it fail with
// ErrUnsafePath. flags is a bitwise OR of the Extract* flags.
func (r *Reader) Extract(dir string, flags int) (ExtractStats, error) {
	if err := noNUL("directory", dir); err != nil {
		return ExtractStats{}, err
	}
	var st C.estargz_extract_stats
	st.struct_size = C.size_t(unsafe.Sizeof(st)) // the struct_size rule of estargz.h
	err := r.with("Extract", func(p *C.estargz_reader) error {
		s := C.CString(dir)
		defer C.free(unsafe.Pointer(s))
		return call(func() C.estargz_result { return C.estargz_reader_extract(p, s, C.uint32_t(flags), &st) })
	})
	return ExtractStats{
		Files: int64(st.files), Dirs: int64(st.dirs), Others: int64(st.others), Bytes: int64(st.bytes),
	}, err
}
