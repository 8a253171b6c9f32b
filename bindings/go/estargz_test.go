package estargz_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

func TestVersion(t *testing.T) {
	if v := estargz.Version(); !strings.HasPrefix(v, "0.") {
		t.Fatalf("Version() = %q", v)
	}
}

func TestCodes(t *testing.T) {
	// Every code has its C name, and only its own sentinel matches.
	sentinels := []error{
		estargz.ErrIO, estargz.ErrTruncated, estargz.ErrInvalidFooter, estargz.ErrInvalidTOC,
		estargz.ErrInvalidTar, estargz.ErrCorrupt, estargz.ErrDigestMismatch, estargz.ErrUnsafePath,
		estargz.ErrNotFound, estargz.ErrWrongType, estargz.ErrUnsupported, estargz.ErrInvalidArgument,
		estargz.ErrLimitExceeded, estargz.ErrInternal, estargz.ErrNetwork, estargz.ErrTimeout,
		estargz.ErrRegistry, estargz.ErrUnauthorized,
	}
	for i, s := range sentinels {
		code := estargz.Code(i + 1)
		if s != error(code) {
			t.Errorf("sentinel %d is %v, want code %d", i, s, code)
		}
		if name := code.String(); !strings.HasPrefix(name, "ESTARGZ_") || name == "ESTARGZ_UNKNOWN" {
			t.Errorf("code %d has name %q", code, name)
		}
		err := fmt.Errorf("wrapped: %w", &estargz.Error{Code: code, Message: "m"})
		for j, other := range sentinels {
			if got := errors.Is(err, other); got != (i == j) {
				t.Errorf("errors.Is(code %d, sentinel %d) = %v", code, j+1, got)
			}
		}
	}
	if got := estargz.Code(99).String(); got != "ESTARGZ_UNKNOWN" {
		t.Errorf("unknown code name %q", got)
	}
	if estargz.CodeDigestMismatch.String() != "ESTARGZ_DIGEST_MISMATCH" || estargz.CodeNotFound != 9 {
		t.Error("codes differ from estargz.h")
	}
}

func sha256Digest(b []byte) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b))
}

func TestRoundTrip(t *testing.T) {
	files := fixture()
	want := contents(files)
	tarball := makeTar(t, files)
	// Every build adds a one-byte landmark file (.prefetch.landmark or
	// .no.prefetch.landmark), as the reference does.
	total := int64(1)
	for _, f := range files {
		total += int64(len(f.Body))
	}
	cases := []struct {
		name     string
		opts     []estargz.Option
		external bool
	}{
		{"defaults", nil, false},
		{"small chunks", []estargz.Option{estargz.WithChunkSize(64 << 10)}, false},
		{"min chunk size", []estargz.Option{estargz.WithChunkSize(64 << 10), estargz.WithMinChunkSize(16 << 10)}, false},
		{"level 1, one thread", []estargz.Option{estargz.WithCompressionLevel(1), estargz.WithThreads(1)}, false},
		{"prioritized", []estargz.Option{estargz.WithPrioritizedFiles([]string{"data/big.txt", "etc/hostname"})}, false},
		{"external TOC", []estargz.Option{estargz.WithExternalTOC()}, true},
		{"keep diff id", []estargz.Option{estargz.WithExternalTOC(), estargz.WithKeepDiffID()}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, blob := buildBlob(t, files, c.opts...)
			if blob.Digest() != sha256Digest(data) {
				t.Errorf("Digest %s, blob hashes to %s", blob.Digest(), sha256Digest(data))
			}
			if !strings.HasPrefix(blob.TOCDigest(), "sha256:") || !strings.HasPrefix(blob.DiffID(), "sha256:") {
				t.Errorf("digests %q %q", blob.TOCDigest(), blob.DiffID())
			}
			if c.external != (blob.ExternalTOCData() != nil) || c.external != blob.HasExternalTOC() || c.external != (blob.TOCOffset() == 0) {
				t.Errorf("external TOC: %d bytes, offset %d", len(blob.ExternalTOCData()), blob.TOCOffset())
			}
			// DiffID is the digest of the decompressed blob.
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if blob.DiffID() != sha256Digest(plain) || blob.UncompressedSize() != int64(len(plain)) {
				t.Errorf("DiffID %s / size %d, decompressed blob: %s / %d",
					blob.DiffID(), blob.UncompressedSize(), sha256Digest(plain), len(plain))
			}
			if c.name == "keep diff id" && !bytes.Equal(plain, tarball) {
				t.Error("keep-diff-id: the decompressed blob differs from the input tar")
			}

			opts := []estargz.OpenOption{estargz.WithExpectedTOCDigest(blob.TOCDigest())}
			if c.external {
				opts = append(opts, estargz.WithExternalTOCData(blob.ExternalTOCData()))
			}
			r := openBytes(t, data, opts...)
			if r.TOCDigest() != blob.TOCDigest() {
				t.Errorf("reader TOC digest %s, build said %s", r.TOCDigest(), blob.TOCDigest())
			}
			if err := r.VerifyTOCDigest(blob.TOCDigest()); err != nil {
				t.Errorf("VerifyTOCDigest: %v", err)
			}
			checkContents(t, r, want)
			want := total
			if c.name == "keep diff id" {
				want-- // lossless mode adds no landmark
			}
			n, err := r.Verify()
			if err != nil || n != want {
				t.Errorf("Verify = %d, %v; want %d bytes", n, err, want)
			}
			info, err := r.Info()
			if err != nil {
				t.Fatal(err)
			}
			wantKind := estargz.FooterEStargz
			if c.external {
				wantKind = estargz.FooterExternalTOC
			}
			if info.BlobSize != int64(len(data)) || info.FooterKind != wantKind || info.TOCEntries != blob.TOCEntries() ||
				info.Format != estargz.FormatEStargz || info.ZstdChunkedGeneration != 0 {
				t.Errorf("Info = %+v (blob %d bytes, %d TOC entries)", info, len(data), blob.TOCEntries())
			}
		})
	}
}

func TestBuildGzipInputAndOpenPath(t *testing.T) {
	files := fixture()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(makeTar(t, files))
	zw.Close()
	blob, err := estargz.Build(&gz, estargz.WithTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	path := filepath.Join(t.TempDir(), "layer.esgz")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, blob); err != nil {
		t.Fatal(err)
	}
	out.Close()
	r, err := estargz.OpenPath(path, estargz.WithExpectedTOCDigest(blob.TOCDigest()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkContents(t, r, contents(files))
}

func TestEntries(t *testing.T) {
	data, _ := buildBlob(t, fixture())
	r := openBytes(t, data)

	e, err := r.Lookup("/etc//os-release")
	if err != nil {
		t.Fatal(err)
	}
	if e.Path != "etc/os-release" || e.Name != "os-release" || e.Type != estargz.TypeReg || e.Size != 26 || e.Mode != 0o644 ||
		e.UID != 1000 || e.UserName != "user" || e.GroupName != "group" || !e.ModTime.Equal(mtime) || e.NumLink != 2 {
		t.Errorf("etc/os-release: %+v", e)
	}
	hard, err := r.Lookup("data/hard")
	if err != nil {
		t.Fatal(err)
	}
	if hard.Type != estargz.TypeHardlink || hard.LinkName != "etc/os-release" || !hard.IsRegular() || hard.Size != 26 {
		t.Errorf("data/hard: %+v", hard)
	}
	link, err := r.Lookup("data/link")
	if err != nil {
		t.Fatal(err)
	}
	if link.Type != estargz.TypeSymlink || link.LinkName != "big.txt" || link.Mode.Type() != fs.ModeSymlink {
		t.Errorf("data/link: %+v", link)
	}
	root, err := r.Lookup("")
	if err != nil || root.Path != "" || root.Name != "" || !root.Mode.IsDir() {
		t.Errorf("root: %+v, %v", root, err)
	}
	list, err := r.ReadDir("data")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Path)
	}
	if want := []string{"data/abs", "data/big.txt", "data/empty", "data/hard", "data/link"}; !slices.Equal(names, want) {
		t.Errorf("ReadDir(data) = %q, want %q", names, want)
	}
	if got := readFile(t, r, "data/hard"); got != contents(fixture())["etc/os-release"] {
		t.Errorf("data/hard reads %q", got)
	}
}

func TestXattrs(t *testing.T) {
	f := reg("f", "x")
	f.Xattrs = map[string]string{"user.a": "1", "user.bin": "\x00\xff"}
	data, _ := buildBlob(t, []file{f})
	e, err := openBytes(t, data).Lookup("f")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Xattrs) != 2 || string(e.Xattrs["user.a"]) != "1" || string(e.Xattrs["user.bin"]) != "\x00\xff" {
		t.Errorf("xattrs %q", e.Xattrs)
	}
}

func TestFS(t *testing.T) {
	files := fixture()
	data, _ := buildBlob(t, files, estargz.WithChunkSize(64<<10))
	r := openBytes(t, data)
	fsys := r.FS()
	if fstestFollowsDirSymlinks {
		if err := fstest.TestFS(fsys, "etc/os-release", "usr/bin/app", "data/big.txt", "data/empty", "data/hard", "data/link", "bin"); err != nil {
			t.Fatal(err)
		}
	} else {
		// The tree without "bin", a symlink to a directory.
		data, err := fs.Sub(fsys, "data")
		if err != nil {
			t.Fatal(err)
		}
		if err := fstest.TestFS(data, "big.txt", "empty", "hard", "link", "abs"); err != nil {
			t.Fatal(err)
		}
	}
	want := contents(files)
	for name, body := range map[string]string{
		"bin/app":      want["usr/bin/app"],  // directory symlink, relative
		"data/link":    want["data/big.txt"], // file symlink
		"data/abs":     want["etc/hostname"], // absolute target, inside the tree
		"data/hard":    want["etc/os-release"],
		"usr/bin/tool": want["usr/bin/tool"],
	} {
		got, err := fs.ReadFile(fsys, name)
		if err != nil || string(got) != body {
			t.Errorf("ReadFile(%s) = %d bytes, %v", name, len(got), err)
		}
	}
	// fs.ReadLinkFS (Go 1.25) by its method: the module declares Go 1.23.
	lfs := fsys.(interface{ ReadLink(string) (string, error) })
	if target, err := lfs.ReadLink("bin"); err != nil || target != "usr/bin" {
		t.Errorf("ReadLink(bin) = %q, %v", target, err)
	}
	if _, err := fs.Stat(fsys, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v", err)
	}
	if _, err := fsys.Open("../etc"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Open(../etc) = %v", err)
	}
	if _, err := fsys.Open("etc/os-release/x"); err == nil {
		t.Error("Open through a file succeeded")
	}
}

func TestFSSymlinkLoops(t *testing.T) {
	data, _ := buildBlob(t, []file{symlink("a", "b"), symlink("b", "a"), symlink("up", "../../etc"), dir("etc/"), reg("etc/f", "f")})
	fsys := openBytes(t, data).FS()
	if _, err := fsys.Open("a"); err == nil || !strings.Contains(err.Error(), "levels of symbolic links") {
		t.Errorf("Open(a) = %v", err)
	}
	// ".." above the root stays at the root, as in a container's rootfs.
	if b, err := fs.ReadFile(fsys, "up/f"); err != nil || string(b) != "f" {
		t.Errorf("ReadFile(up/f) = %q, %v", b, err)
	}
}

func TestConcurrentReads(t *testing.T) {
	files := fixture()
	want := contents(files)
	data, _ := buildBlob(t, files, estargz.WithChunkSize(32<<10))
	r := openBytes(t, data)
	names := []string{"data/big.txt", "usr/bin/app", "usr/bin/tool", "etc/os-release", "data/hard"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	// Garbage collections during the reads: nothing the library calls
	// back into may move or vanish.
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for range 40 {
				name := names[rng.Intn(len(names))]
				body := want[name]
				sr, err := r.OpenFile(name)
				if err != nil {
					errs <- err
					return
				}
				off := rng.Intn(len(body))
				n := rng.Intn(100_000) + 1
				buf := make([]byte, n)
				m, err := sr.ReadAt(buf, int64(off))
				end := min(off+n, len(body))
				if m != end-off || (err != nil && err != io.EOF) || string(buf[:m]) != body[off:end] {
					errs <- fmt.Errorf("%s [%d,+%d): %d bytes, %v", name, off, n, m, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-gcDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// settledHandles is the live handle count once the garbage of earlier
// tests is gone: their finalizers would otherwise free handles while a test
// runs and make its count drop below the base it took.
func settledHandles() int64 {
	last, stable := estargz.LiveHandles(), 0
	for deadline := time.Now().Add(5 * time.Second); stable < 3 && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		now := estargz.LiveHandles()
		if now == last {
			stable++
		} else {
			last, stable = now, 0
		}
	}
	return last
}

// checkHandles fails when handles created since base are still alive.
func checkHandles(t *testing.T, base int64, after string) {
	t.Helper()
	if got := estargz.LiveHandles(); got > base {
		t.Errorf("%d handles alive %s, want %d", got, after, base)
	}
}

// waitForHandles runs the GC until every library handle is freed.
func waitForHandles(t *testing.T, base int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for estargz.LiveHandles() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d handles still alive after GC (expected %d)", estargz.LiveHandles(), base)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFinalizersFreeHandles(t *testing.T) {
	base := settledHandles()
	data, _ := buildBlob(t, fixture(), estargz.WithChunkSize(64<<10))
	// Readers over an io.ReaderAt (reader handle + callback cell each),
	// dropped without Close; some with files open.
	for i := range 100 {
		r, err := estargz.Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			sr, err := r.OpenFile("usr/bin/tool")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(sr); err != nil {
				t.Fatal(err)
			}
			if _, err := r.FS().(fs.ReadDirFS).ReadDir("data"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if estargz.LiveHandles() <= base {
		t.Fatal("live handle counter does not count readers")
	}
	waitForHandles(t, base)

	// Closed readers free everything at once.
	r := openBytes(t, data)
	r.Close()
	checkHandles(t, base, "after Close")
}

func TestClosedReader(t *testing.T) {
	data, _ := buildBlob(t, fixture())
	r := openBytes(t, data)
	sr, err := r.OpenFile("etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	fsys := r.FS()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["Lookup"] = r.Lookup("etc")
	_, checks["OpenFile"] = r.OpenFile("etc/hostname")
	_, checks["ReadAt"] = sr.ReadAt(make([]byte, 4), 0)
	checks["VerifyTOCDigest"] = r.VerifyTOCDigest(r.TOCDigest())
	_, checks["Verify"] = r.Verify()
	_, checks["Info"] = r.Info()
	_, checks["ReadDir"] = r.ReadDir("")
	_, checks["Extract"] = r.Extract(t.TempDir(), 0)
	_, checks["FS.Open"] = fsys.Open("etc/hostname")
	for what, err := range checks {
		if !errors.Is(err, estargz.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
}

func TestCloseWhileReading(t *testing.T) {
	data, _ := buildBlob(t, fixture(), estargz.WithChunkSize(16<<10))
	r := openBytes(t, data)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				sr, err := r.OpenFile("data/big.txt")
				if err != nil {
					if !errors.Is(err, estargz.ErrClosed) {
						t.Errorf("OpenFile: %v", err)
					}
					return
				}
				if _, err := io.Copy(io.Discard, sr); err != nil {
					if !errors.Is(err, estargz.ErrClosed) {
						t.Errorf("read: %v", err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	r.Close()
	wg.Wait()
}

func asError(t *testing.T, err error) *estargz.Error {
	t.Helper()
	var e *estargz.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *estargz.Error", err, err)
	}
	return e
}

func TestOpenErrors(t *testing.T) {
	data, blob := buildBlob(t, fixture(), estargz.WithChunkSize(64<<10))
	open := func(b []byte, opts ...estargz.OpenOption) error {
		r, err := estargz.Open(bytes.NewReader(b), int64(len(b)), opts...)
		if err == nil {
			r.Close()
		}
		return err
	}

	// Truncations: never a success, never a panic; a clear code.
	for _, n := range []int{0, 1, 10, 46, 51, len(data) / 2, len(data) - 52, len(data) - 1} {
		err := open(data[:n])
		if err == nil {
			t.Errorf("truncated to %d bytes: opened", n)
			continue
		}
		e := asError(t, err)
		switch e.Code {
		case estargz.CodeTruncated, estargz.CodeInvalidFooter, estargz.CodeInvalidTOC, estargz.CodeCorrupt:
		default:
			t.Errorf("truncated to %d bytes: %v (%v)", n, e.Code, err)
		}
		if !strings.HasPrefix(e.Message, "estargz_reader_open_callback: ") {
			t.Errorf("message %q does not name the failed function", e.Message)
		}
	}

	bad := bytes.Clone(data)
	copy(bad[len(bad)-20:], "garbage garbage ga")
	if err := open(bad); !errors.Is(err, estargz.ErrInvalidFooter) {
		t.Errorf("bad footer: %v", err)
	}
	if err := open(bytes.Repeat([]byte("not a blob "), 100)); !errors.Is(err, estargz.ErrInvalidFooter) {
		t.Errorf("not a blob: %v", err)
	}

	wrong := "sha256:" + strings.Repeat("0", 64)
	err := open(data, estargz.WithExpectedTOCDigest(wrong))
	if !errors.Is(err, estargz.ErrDigestMismatch) || !strings.Contains(err.Error(), blob.TOCDigest()) {
		t.Errorf("wrong TOC digest: %v", err)
	}
	r := openBytes(t, data)
	if err := r.VerifyTOCDigest(wrong); !errors.Is(err, estargz.ErrDigestMismatch) {
		t.Errorf("VerifyTOCDigest(wrong): %v", err)
	}
	if err := r.VerifyTOCDigest("sha256:1234"); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("VerifyTOCDigest(not a digest): %v", err)
	}
	if err := open(data, estargz.WithExpectedTOCDigest("sha256:ABC")); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("WithExpectedTOCDigest(not a digest): %v", err)
	}
	if err := open(data, estargz.WithMaxTOCSize(100)); !errors.Is(err, estargz.ErrLimitExceeded) {
		t.Errorf("TOC over the limit: %v", err)
	}

	ext, extBlob := buildBlob(t, fixture(), estargz.WithExternalTOC())
	if err := open(ext); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("external TOC blob without the TOC: %v", err)
	}
	if err := open(ext, estargz.WithExternalTOCData(extBlob.ExternalTOCData()[:10])); err == nil {
		t.Error("external TOC blob with a cut TOC opened")
	}

	if _, err := estargz.Open(nil, 10); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("nil ReaderAt: %v", err)
	}
	if _, err := estargz.Open(bytes.NewReader(data), -1); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("negative size: %v", err)
	}
	if _, err := estargz.OpenPath(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, estargz.ErrIO) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	data, _ := buildBlob(t, fixture(), estargz.WithChunkSize(64<<10))
	r := openBytes(t, data)
	if _, err := r.Lookup("nope"); !errors.Is(err, estargz.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup(nope): %v", err)
	}
	if _, err := r.Lookup("etc\x00/hostname"); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("NUL in path: %v", err)
	}
	if _, err := r.OpenFile("etc"); !errors.Is(err, estargz.ErrWrongType) {
		t.Errorf("OpenFile(dir): %v", err)
	}
	if _, err := r.OpenFile("data/link"); !errors.Is(err, estargz.ErrWrongType) {
		t.Errorf("OpenFile(symlink): %v", err)
	}
	if _, err := r.ReadDir("etc/hostname"); !errors.Is(err, estargz.ErrWrongType) {
		t.Errorf("ReadDir(file): %v", err)
	}
	sr, _ := r.OpenFile("etc/hostname")
	if n, err := sr.ReadAt(make([]byte, 10), 100); n != 0 || err != io.EOF {
		t.Errorf("ReadAt past the end: %d, %v", n, err)
	}
	if _, err := r.Extract(t.TempDir(), 1<<20); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("Extract with unknown flags: %v", err)
	}

	// A damaged chunk: opening works (the TOC is intact), reading the file
	// fails with a digest or decompression error, and Verify finds it.
	damaged := bytes.Clone(data)
	idx := bytes.Index(damaged, []byte{0x1f, 0x8b}) // first gzip member
	for i := idx + 200; i < idx+260; i++ {
		damaged[i] ^= 0x55
	}
	dr := openBytes(t, damaged)
	var failed int
	for _, name := range []string{"etc/os-release", "etc/hostname", "usr/bin/app", "usr/bin/tool", "data/big.txt"} {
		sr, err := dr.OpenFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(sr); err != nil {
			if !errors.Is(err, estargz.ErrDigestMismatch) && !errors.Is(err, estargz.ErrCorrupt) {
				t.Errorf("%s: %v", name, err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Error("no read saw the damage")
	}
	if _, err := dr.Verify(); !errors.Is(err, estargz.ErrDigestMismatch) && !errors.Is(err, estargz.ErrCorrupt) {
		t.Errorf("Verify of a damaged blob: %v", err)
	}
}

// flakyReaderAt fails or panics at offsets at or past from.
type flakyReaderAt struct {
	data  []byte
	from  int64
	panic bool
}

var errFlaky = errors.New("flaky storage")

func (f *flakyReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.from {
		if f.panic {
			panic("storage panicked")
		}
		return 0, errFlaky
	}
	return bytes.NewReader(f.data).ReadAt(p, off)
}

func TestReaderAtFailures(t *testing.T) {
	data, _ := buildBlob(t, fixture(), estargz.WithChunkSize(64<<10))
	base := settledHandles()
	for _, panics := range []bool{false, true} {
		// Failing at once: the open fails.
		_, err := estargz.Open(&flakyReaderAt{data: data, panic: panics}, int64(len(data)))
		if !errors.Is(err, estargz.ErrIO) {
			t.Errorf("panic=%v: open over a failing ReaderAt: %v", panics, err)
		}
		// Failing after the TOC: reads fail, the reader keeps working.
		fr := &flakyReaderAt{data: data, from: int64(len(data))}
		r, err := estargz.Open(fr, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		fr.from, fr.panic = 0, panics
		sr, _ := r.OpenFile("data/big.txt")
		if _, err := io.ReadAll(sr); !errors.Is(err, estargz.ErrIO) {
			t.Errorf("panic=%v: read over a failing ReaderAt: %v", panics, err)
		}
		r.Close()
	}
	checkHandles(t, base, "after failed opens and closed readers")
}

func TestReadContext(t *testing.T) {
	data, _ := buildBlob(t, fixture(), estargz.WithChunkSize(64<<10))
	ctx, cancel := context.WithCancel(context.Background())
	r := openBytes(t, data, estargz.WithReadContext(ctx))
	if got := readFile(t, r, "etc/hostname"); got != "box\n" {
		t.Fatalf("read %q", got)
	}
	cancel()
	sr, err := r.OpenFile("data/big.txt")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(sr)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, estargz.ErrIO) {
		t.Errorf("read after cancel: %v", err)
	}
	if _, err := estargz.Open(bytes.NewReader(data), int64(len(data)), estargz.WithReadContext(ctx)); !errors.Is(err, context.Canceled) {
		t.Errorf("open with a cancelled context: %v", err)
	}
}

func TestExtract(t *testing.T) {
	files := fixture()
	data, _ := buildBlob(t, files)
	r := openBytes(t, data)
	dir := t.TempDir()
	st, err := r.Extract(dir, estargz.ExtractNoSameOwner)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 6 || st.Dirs != 4 {
		t.Errorf("stats %+v", st)
	}
	for name, body := range contents(files) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != body {
			t.Errorf("%s: %d bytes, %v", name, len(b), err)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin")); err != nil || target != "usr/bin" {
		t.Errorf("bin -> %q, %v", target, err)
	}
}

// cancelReader cancels its context after n reads.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return c.r.Read(p)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader panicked") }

// zeroReader answers (0, nil) forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestBuildErrors(t *testing.T) {
	tarball := makeTar(t, fixture())
	base := settledHandles()

	ctx, cancel := context.WithCancel(context.Background())
	in := &cancelReader{r: iotestOneByte(bytes.NewReader(tarball)), n: 3, cancel: cancel}
	_, err := estargz.Build(in, estargz.WithContext(ctx))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, estargz.ErrIO) {
		t.Errorf("cancelled build: %v", err)
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithContext(ctx)); !errors.Is(err, context.Canceled) {
		t.Errorf("build with a done context: %v", err)
	}

	myErr := errors.New("disk on fire")
	if _, err := estargz.Build(errReader{myErr}); !errors.Is(err, myErr) || !errors.Is(err, estargz.ErrIO) {
		t.Errorf("failing reader: %v", err)
	}
	if _, err := estargz.Build(panicReader{}); !errors.Is(err, estargz.ErrIO) || !strings.Contains(err.Error(), "reader panicked") {
		t.Errorf("panicking reader: %v", err)
	}
	if _, err := estargz.Build(zeroReader{}); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("reader without progress: %v", err)
	}
	if _, err := estargz.Build(io.MultiReader(bytes.NewReader(tarball[:700]), bytes.NewReader(bytes.Repeat([]byte{0xff}, 1000)))); !errors.Is(err, estargz.ErrInvalidTar) {
		t.Errorf("bad tar: %v", err)
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithCompressionLevel(13)); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("level 13: %v", err)
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithKeepDiffID()); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("keep-diff-id without external TOC: %v", err)
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithPrioritizedFiles([]string{"no/such"})); err == nil {
		t.Error("missing prioritized file: built")
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithPrioritizedFiles([]string{"a\x00b"})); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("NUL in prioritized file: %v", err)
	}
	if _, err := estargz.Build(nil); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("nil reader: %v", err)
	}
	checkHandles(t, base, "after failed builds")
}

func TestMissedPrioritized(t *testing.T) {
	var missed []string
	data, _ := buildBlob(t, fixture(),
		estargz.WithPrioritizedFiles([]string{"etc/hostname", "no/such", "usr/bin/tool"}),
		estargz.WithAllowMissingPrioritized(&missed))
	if !slices.Equal(missed, []string{"no/such"}) {
		t.Errorf("missed %q", missed)
	}
	r := openBytes(t, data)
	if _, err := r.Lookup(".prefetch.landmark"); err != nil {
		t.Errorf("no prefetch landmark: %v", err)
	}
	checkContents(t, r, contents(fixture()))
}

// iotestOneByte returns 1 byte per Read, so builds make many callbacks.
func iotestOneByte(r io.Reader) io.Reader { return oneByte{r} }

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}
