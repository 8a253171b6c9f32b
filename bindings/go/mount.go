package estargz

// #include <estargz.h>
// #include <stdlib.h>
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// MountOption configures Mount and MountLocal.
type MountOption func(*mountOptions) error

type mountOptions struct {
	remote            []RemoteOption
	expectedTOCDigest string
	threads           int
	allowOther        bool
	backgroundFetch   bool
	passthrough       bool
	readAheadKB       int
	readAheadSet      bool
	recordAccess      bool
	recordLimit       int
}

// WithRemote passes registry, cache and layer options to Mount (see
// OpenRemote; the cache directory also holds passthrough copies, and
// WithPrefetch sets whether the prioritized files are fetched once
// mounted).
func WithRemote(opts ...RemoteOption) MountOption {
	return func(o *mountOptions) error {
		o.remote = append(o.remote, opts...)
		return nil
	}
}

// WithMountExpectedTOCDigest refuses a layer whose TOC digest is not digest (for
// Mount besides the manifest's annotation, e.g. the one containerd passes
// in a snapshot label).
func WithMountExpectedTOCDigest(digest string) MountOption {
	return func(o *mountOptions) error {
		o.expectedTOCDigest = digest
		return noNUL("TOC digest", digest)
	}
}

// WithMountThreads sets the threads serving FUSE requests (default 8).
func WithMountThreads(n int) MountOption {
	return func(o *mountOptions) error {
		if n < 1 || n > 1024 {
			return goError(CodeInvalidArgument, fmt.Sprintf("mount threads %d is not in 1-1024", n))
		}
		o.threads = n
		return nil
	}
}

// WithAllowOther lets other users, and overlayfs mounts made by them (a
// container's root file system), use the mount.
func WithAllowOther() MountOption {
	return func(o *mountOptions) error {
		o.allowOther = true
		return nil
	}
}

// WithBackgroundFetch sets whether the rest of a registry layer is fetched
// into the chunk cache once mounted (default on).
func WithBackgroundFetch(on bool) MountOption {
	return func(o *mountOptions) error {
		o.backgroundFetch = on
		return nil
	}
}

// WithPassthrough sets whether fully cached files are handed to the kernel
// (FUSE passthrough; needs a cache directory; default on).
func WithPassthrough(on bool) MountOption {
	return func(o *mountOptions) error {
		o.passthrough = on
		return nil
	}
}

// WithReadAheadKB sets the mount's kernel readahead window in KiB (0: the
// kernel's default).
func WithReadAheadKB(kb int) MountOption {
	return func(o *mountOptions) error {
		if kb < 0 || kb > 1<<20 {
			return goError(CodeInvalidArgument, fmt.Sprintf("readahead %d KiB is not in 0-1048576", kb))
		}
		o.readAheadKB, o.readAheadSet = kb, true
		return nil
	}
}

// WithRecordAccess records the regular files opened or read in the mount,
// in first-access order (as `estargz-fuse mount --record-access`); read the
// record with LayerMount.AccessRecord, also after Close.
func WithRecordAccess() MountOption {
	return func(o *mountOptions) error {
		o.recordAccess = true
		return nil
	}
}

// WithRecordLimit sets the most files recorded (default 100000; later ones
// are counted in Dropped, not listed).
func WithRecordLimit(n int) MountOption {
	return func(o *mountOptions) error {
		if n < 1 {
			return goError(CodeInvalidArgument, fmt.Sprintf("record limit %d is not positive", n))
		}
		o.recordLimit = n
		return nil
	}
}

// AccessRecord is what a recording mount noted: the JSON that
// `estargz-fuse mount --record-access FILE` writes and `estargz optimize
// --prioritized-files-from FILE` reads (json.Marshal gives it back).
type AccessRecord struct {
	Version int           `json:"version"`
	Layers  []LayerRecord `json:"layers"`
}

// LayerRecord is the accessed files of one layer.
type LayerRecord struct {
	// Source says where the layer came from, for people.
	Source string `json:"source"`
	// Index is the layer's position in the image, when known.
	Index *int `json:"index,omitempty"`
	// Digest is the layer blob's digest, when known.
	Digest    string `json:"digest,omitempty"`
	TOCDigest string `json:"tocDigest"`
	// Files are paths in the layer, in first-access order.
	Files []string `json:"files"`
	// Dropped counts files not listed because of the record limit.
	Dropped uint64 `json:"dropped,omitempty"`
}

// LayerMount is a layer mounted read-only with FUSE, served by threads of
// the library until Close. Its methods may be called from any goroutine.
type LayerMount struct {
	mu         sync.Mutex
	p          *C.estargz_mount
	mountpoint string
	tocDigest  string
	recording  bool
	// The record read at Close, for AccessRecord afterwards.
	finalRecord *AccessRecord
}

// MountStatus is the state of a LayerMount.
type MountStatus struct {
	// Mounted is false once unmounted (by Close or from outside).
	Mounted bool
	// FetchedBytes and FetchRequests count what was fetched from the
	// registry so far (0 for a local blob).
	FetchedBytes  uint64
	FetchRequests uint64
}

func (o *mountOptions) cOptions() (*C.estargz_mount_options, error) {
	var p *C.estargz_mount_options
	if err := call(func() C.estargz_result { return C.estargz_mount_options_new(&p) }); err != nil {
		return nil, err
	}
	steps := []func() C.estargz_result{
		func() C.estargz_result { return C.estargz_mount_options_set_threads(p, C.uint32_t(o.threads)) },
		func() C.estargz_result { return C.estargz_mount_options_set_allow_other(p, C.bool(o.allowOther)) },
		func() C.estargz_result {
			return C.estargz_mount_options_set_background_fetch(p, C.bool(o.backgroundFetch))
		},
		func() C.estargz_result { return C.estargz_mount_options_set_passthrough(p, C.bool(o.passthrough)) },
	}
	if o.recordAccess {
		steps = append(steps, func() C.estargz_result { return C.estargz_mount_options_set_record_access(p, true) })
	}
	if o.recordLimit > 0 {
		steps = append(steps, func() C.estargz_result {
			return C.estargz_mount_options_set_record_limit(p, C.size_t(o.recordLimit))
		})
	}
	if o.readAheadSet {
		steps = append(steps, func() C.estargz_result {
			return C.estargz_mount_options_set_read_ahead_kb(p, C.uint32_t(o.readAheadKB))
		})
	}
	for _, step := range steps {
		if err := call(step); err != nil {
			C.estargz_mount_options_free(p)
			return nil, err
		}
	}
	liveHandles.Add(1)
	return p, nil
}

func freeMountOptions(p *C.estargz_mount_options) {
	C.estargz_mount_options_free(p)
	liveHandles.Add(-1)
}

func newMountOptions(opts []MountOption) (*mountOptions, *remoteOptions, error) {
	o := &mountOptions{backgroundFetch: true, passthrough: true}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, nil, err
		}
	}
	r := &remoteOptions{prefetch: true}
	for _, opt := range o.remote {
		if err := opt(r); err != nil {
			return nil, nil, err
		}
	}
	return o, r, nil
}

// optionalCString is NULL for "", else a C copy the caller frees.
func optionalCString(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// Mount mounts one layer of the image ref (see OpenRemote; the layer is
// chosen with WithRemote(WithLayerDigest(...)) or WithLayerIndex) read-only
// at the directory mountpoint, reading it lazily from its registry. When
// it returns, the file system answers requests. Needs the right to mount
// FUSE file systems (root, or fusermount3).
//
// If ctx is done before the mount is up, Mount returns ctx.Err(); a mount
// that still comes up afterwards is unmounted again in the background.
func Mount(ctx context.Context, ref, mountpoint string, opts ...MountOption) (*LayerMount, error) {
	return mount(ctx, mountpoint, opts, func(o *mountOptions, r *remoteOptions, copts *C.estargz_mount_options,
		cmnt *C.char, out **C.estargz_mount) error {
		if err := noNUL("reference", ref); err != nil {
			return err
		}
		ropts, err := r.cOptions()
		if err != nil {
			return err
		}
		defer freeRemoteOptions(ropts)
		cref := C.CString(ref)
		defer C.free(unsafe.Pointer(cref))
		clayer := optionalCString(r.layer)
		defer C.free(unsafe.Pointer(clayer))
		cdigest := optionalCString(o.expectedTOCDigest)
		defer C.free(unsafe.Pointer(cdigest))
		return call(func() C.estargz_result {
			return C.estargz_mount_remote(cref, clayer, cdigest, cmnt, ropts, copts, out)
		})
	})
}

// MountOpenAhead starts opening the layers digests of the image ref in the
// background and returns at once (estargz_mount_open_ahead), so that a
// Mount of one of them by digest (WithLayerDigest) finds it opened:
// runtimes mount an image's layers one after the other, and each would
// otherwise wait for its own manifest, footer and TOC requests. The
// manifest is fetched once for all of them; only layers whose TOC digest
// it annotates are opened. Of opts, the remote options (WithRemote) apply:
// pass the ones the mounts use.
//
// Layers already being opened are skipped. After a failed open the Mount
// opens the layer itself, except after a timeout, which it returns rather
// than wait for twice. At most 16 opens are held; one no Mount claims
// within 30 s is no longer used and is dropped by the next call. It
// returns how many opens started.
func MountOpenAhead(ref string, digests []string, opts ...MountOption) (int, error) {
	_, r, err := newMountOptions(opts)
	if err != nil {
		return 0, err
	}
	if err := noNUL("reference", ref); err != nil {
		return 0, err
	}
	for _, d := range digests {
		if err := noNUL("digest", d); err != nil {
			return 0, err
		}
	}
	ropts, err := r.cOptions()
	if err != nil {
		return 0, err
	}
	defer freeRemoteOptions(ropts)
	cref := C.CString(ref)
	defer C.free(unsafe.Pointer(cref))
	var cdigests **C.char
	if len(digests) > 0 {
		// C memory: cgo forbids passing Go memory that holds Go pointers.
		arr := (*[1 << 20]*C.char)(C.malloc(C.size_t(len(digests)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:len(digests):len(digests)]
		for i, d := range digests {
			arr[i] = C.CString(d)
		}
		defer func() {
			for _, p := range arr {
				C.free(unsafe.Pointer(p))
			}
			C.free(unsafe.Pointer(&arr[0]))
		}()
		cdigests = &arr[0]
	}
	var started C.size_t
	err = call(func() C.estargz_result {
		return C.estargz_mount_open_ahead(ropts, cref, cdigests, C.size_t(len(digests)), &started)
	})
	return int(started), err
}

// MountLocal mounts the eStargz blob in the file at path (which must not
// change while mounted) read-only at the directory mountpoint. Of the
// remote options none apply; WithMountExpectedTOCDigest refuses another TOC.
func MountLocal(path, mountpoint string, opts ...MountOption) (*LayerMount, error) {
	return mount(context.Background(), mountpoint, opts, func(o *mountOptions, _ *remoteOptions,
		copts *C.estargz_mount_options, cmnt *C.char, out **C.estargz_mount) error {
		if err := noNUL("path", path); err != nil {
			return err
		}
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		cdigest := optionalCString(o.expectedTOCDigest)
		defer C.free(unsafe.Pointer(cdigest))
		return call(func() C.estargz_result {
			return C.estargz_mount_local(cpath, cdigest, cmnt, copts, out)
		})
	})
}

type mountFunc func(*mountOptions, *remoteOptions, *C.estargz_mount_options, *C.char, **C.estargz_mount) error

func mount(ctx context.Context, mountpoint string, opts []MountOption, f mountFunc) (*LayerMount, error) {
	o, r, err := newMountOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := noNUL("mountpoint", mountpoint); err != nil {
		return nil, err
	}
	copts, err := o.cOptions()
	if err != nil {
		return nil, err
	}
	type result struct {
		p   *C.estargz_mount
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer freeMountOptions(copts)
		cmnt := C.CString(mountpoint)
		defer C.free(unsafe.Pointer(cmnt))
		var p *C.estargz_mount
		err := f(o, r, copts, cmnt, &p)
		done <- result{p, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, res.err
		}
		m := newLayerMount(res.p, mountpoint)
		m.recording = o.recordAccess
		return m, nil
	case <-ctx.Done():
		go func() {
			// Unmount what the abandoned mount produces.
			if res := <-done; res.err == nil {
				C.estargz_mount_free(res.p)
			}
		}()
		return nil, ctx.Err()
	}
}

func newLayerMount(p *C.estargz_mount, mountpoint string) *LayerMount {
	liveHandles.Add(1)
	m := &LayerMount{p: p, mountpoint: mountpoint, tocDigest: C.GoString(C.estargz_mount_toc_digest(p))}
	// A forgotten mount is still unmounted (lazily if busy) when collected.
	runtime.SetFinalizer(m, func(m *LayerMount) { m.free() })
	return m
}

// Mountpoint is the directory the layer is mounted at.
func (m *LayerMount) Mountpoint() string { return m.mountpoint }

// TOCDigest is the TOC digest of the mounted layer.
func (m *LayerMount) TOCDigest() string { return m.tocDigest }

// Status reports whether the layer is still mounted and what was fetched.
func (m *LayerMount) Status() (MountStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p == nil {
		return MountStatus{}, nil
	}
	st := C.estargz_mount_info{struct_size: C.size_t(unsafe.Sizeof(C.estargz_mount_info{}))}
	if err := call(func() C.estargz_result { return C.estargz_mount_status(m.p, &st) }); err != nil {
		return MountStatus{}, err
	}
	return MountStatus{
		Mounted:       bool(st.mounted),
		FetchedBytes:  uint64(st.fetched_bytes),
		FetchRequests: uint64(st.fetch_requests),
	}, nil
}

// AccessRecord returns the files recorded so far (WithRecordAccess; an
// error matching ErrInvalidArgument without it); after Close, the final
// record.
func (m *LayerMount) AccessRecord() (*AccessRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.recording {
		return nil, goError(CodeInvalidArgument, "the mount does not record accesses (WithRecordAccess)")
	}
	if m.p == nil {
		return m.finalRecord, nil
	}
	return m.readRecordLocked()
}

func (m *LayerMount) readRecordLocked() (*AccessRecord, error) {
	var n C.size_t
	if err := call(func() C.estargz_result { return C.estargz_mount_access_record(m.p, nil, 0, &n) }); err != nil {
		return nil, err
	}
	// The record only grows while mounted: retry with the new length.
	for {
		buf := make([]byte, int(n)+1)
		want := n
		if err := call(func() C.estargz_result {
			return C.estargz_mount_access_record(m.p, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
		}); err != nil {
			return nil, err
		}
		if n <= want {
			rec := &AccessRecord{}
			if err := json.Unmarshal(buf[:n], rec); err != nil {
				return nil, goError(CodeInvalidArgument, fmt.Sprintf("the access record: %v", err))
			}
			return rec, nil
		}
	}
}

// Close unmounts the layer and releases it. A mount in use (open files, an
// overlay on top) is refused with an error matching ErrIO and stays
// mounted, so Close can be called again; closing twice is a no-op.
func (m *LayerMount) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p == nil {
		return nil
	}
	if err := call(func() C.estargz_result { return C.estargz_mount_unmount(m.p) }); err != nil {
		return err
	}
	if m.recording {
		rec, err := m.readRecordLocked()
		if err != nil {
			return err
		}
		m.finalRecord = rec
	}
	m.freeLocked()
	return nil
}

func (m *LayerMount) free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freeLocked()
}

func (m *LayerMount) freeLocked() {
	if m.p != nil {
		C.estargz_mount_free(m.p)
		m.p = nil
		liveHandles.Add(-1)
		runtime.SetFinalizer(m, nil)
	}
}
