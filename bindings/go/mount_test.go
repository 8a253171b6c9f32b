package estargz_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// needFUSE skips a test that mounts unless it runs as root with
// /dev/fuse; with ESTARGZ_REQUIRE_FUSE set (CI) it fails instead.
func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	if os.Geteuid() == 0 && err == nil {
		return
	}
	if os.Getenv("ESTARGZ_REQUIRE_FUSE") != "" {
		t.Fatalf("FUSE mounts need root and /dev/fuse (euid %d, /dev/fuse: %v)", os.Geteuid(), err)
	}
	t.Skip("needs root and /dev/fuse")
}

func isMountpoint(t *testing.T, dir string) bool {
	t.Helper()
	var a, b syscall.Stat_t
	if err := syscall.Stat(dir, &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Dir(dir), &b); err != nil {
		t.Fatal(err)
	}
	return a.Dev != b.Dev
}

func checkMounted(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for name, body := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if string(got) != body {
			t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(body))
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "data/link")); err != nil || target != "big.txt" {
		t.Errorf("data/link -> %q, %v", target, err)
	}
}

func TestMountLocal(t *testing.T) {
	files := fixture()
	data, blob := buildBlob(t, files)
	path := filepath.Join(t.TempDir(), "layer.esgz")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	// Refused before anything is mounted.
	if _, err := estargz.MountLocal(path, mnt, estargz.WithMountExpectedTOCDigest("sha256:"+strings.Repeat("0", 64))); !errors.Is(err, estargz.ErrDigestMismatch) {
		t.Errorf("wrong TOC digest: %v", err)
	}
	if _, err := estargz.MountLocal(path, mnt, estargz.WithMountThreads(0)); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("0 threads: %v", err)
	}
	if _, err := estargz.MountLocal(path, mnt, estargz.WithRecordLimit(0)); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("record limit 0: %v", err)
	}
	needFUSE(t)
	base := settledHandles()
	m, err := estargz.MountLocal(path, mnt, estargz.WithMountExpectedTOCDigest(blob.TOCDigest()), estargz.WithMountThreads(2),
		estargz.WithRecordAccess())
	if err != nil {
		t.Fatal(err)
	}
	if !isMountpoint(t, mnt) || m.TOCDigest() != blob.TOCDigest() || m.Mountpoint() != mnt {
		t.Errorf("mounted: %v, TOC digest %s", isMountpoint(t, mnt), m.TOCDigest())
	}
	// Two files in a known order, then all of them.
	for _, name := range []string{"usr/bin/tool", "etc/hostname"} {
		if _, err := os.ReadFile(filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
	}
	checkMounted(t, mnt, contents(files))
	rec, err := m.AccessRecord()
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, rec, blob.TOCDigest())
	st, err := m.Status()
	if err != nil || !st.Mounted || st.FetchedBytes != 0 {
		t.Errorf("status %+v, %v", st, err)
	}
	// Busy: refused and still served, then closed (twice).
	f, err := os.Open(filepath.Join(mnt, "data/big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); !errors.Is(err, estargz.ErrIO) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("Close while a file is open: %v", err)
	}
	head := make([]byte, 16)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Errorf("read after the refused unmount: %v", err)
	}
	f.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if isMountpoint(t, mnt) {
		t.Error("still mounted after Close")
	}
	if st, err := m.Status(); err != nil || st.Mounted {
		t.Errorf("status after Close %+v, %v", st, err)
	}
	if rec, err := m.AccessRecord(); err != nil {
		t.Errorf("record after Close: %v", err)
	} else {
		checkRecord(t, rec, blob.TOCDigest())
	}
	checkHandles(t, base, "after Close")

	// Without WithRecordAccess there is no record.
	m, err = estargz.MountLocal(path, mnt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.AccessRecord(); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("record of a mount that does not record: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkRecord: one layer, the two files read first in order, every regular
// file once (data/hard is etc/os-release's data), no symlink.
func checkRecord(t *testing.T, rec *estargz.AccessRecord, tocDigest string) {
	t.Helper()
	if rec.Version != 1 || len(rec.Layers) != 1 {
		t.Fatalf("record %+v", rec)
	}
	l := rec.Layers[0]
	if l.TOCDigest != tocDigest || l.Dropped != 0 {
		t.Errorf("layer %+v", l)
	}
	want := map[string]bool{"usr/bin/tool": true, "etc/hostname": true, "usr/bin/app": true, "data/big.txt": true}
	seen := map[string]bool{}
	for _, f := range l.Files {
		if seen[f] || strings.Contains(f, "link") || f == "data/abs" {
			t.Errorf("file %q listed twice or not a regular file: %q", f, l.Files)
		}
		seen[f] = true
		delete(want, f)
	}
	if len(l.Files) < 2 || l.Files[0] != "usr/bin/tool" || l.Files[1] != "etc/hostname" || len(want) != 0 {
		t.Errorf("files %q (missing %v)", l.Files, want)
	}
}

func TestMountRemote(t *testing.T) {
	needFUSE(t)
	files := fixture()
	b, err := estargz.Build(bytes.NewReader(makeTar(t, files)), estargz.WithChunkSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := newRegistry()
	reg.push(t, "v1", true, b)
	host := reg.serve(t)
	mnt := t.TempDir()
	ctx := context.Background()
	remote := estargz.WithRemote(estargz.WithPlainHTTP(), estargz.WithRetries(0), estargz.WithCacheDir(t.TempDir(), 0))
	if _, err := estargz.Mount(ctx, host+"/test/app:v1", mnt, remote,
		estargz.WithMountExpectedTOCDigest("sha256:"+strings.Repeat("1", 64))); !errors.Is(err, estargz.ErrDigestMismatch) {
		t.Errorf("wrong TOC digest: %v", err)
	}
	if _, err := estargz.Mount(ctx, host+"/test/app:nope", mnt, remote); !errors.Is(err, estargz.ErrNotFound) {
		t.Errorf("unknown tag: %v", err)
	}
	m, err := estargz.Mount(ctx, host+"/test/app:v1", mnt, remote, estargz.WithMountExpectedTOCDigest(b.TOCDigest()),
		estargz.WithBackgroundFetch(false), estargz.WithPassthrough(false), estargz.WithReadAheadKB(0))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkMounted(t, mnt, contents(files))
	st, err := m.Status()
	if err != nil || !st.Mounted || st.FetchedBytes == 0 || st.FetchRequests == 0 {
		t.Errorf("status %+v, %v", st, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if isMountpoint(t, mnt) {
		t.Error("still mounted after Close")
	}
}

// The layers of an image opened ahead: one manifest request for all of
// them, and mounts of them that make no request of their own; a layer
// not opened ahead (its open already claimed) pays its own, and a mount
// expecting another TOC digest does not use the open.
func TestMountOpenAhead(t *testing.T) {
	needFUSE(t)
	build := func(files []file) *estargz.Blob {
		b, err := estargz.Build(bytes.NewReader(makeTar(t, files)), estargz.WithChunkSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	files := fixture()
	base := build(files)
	top := build([]file{dir("etc/"), reg("etc/top.txt", "top layer\n")})
	r := newRegistry()
	r.push(t, "v1", true, base, top)
	var manifests, blobs atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case strings.Contains(req.URL.Path, "/manifests/"):
			manifests.Add(1)
		case strings.Contains(req.URL.Path, "/blobs/"):
			blobs.Add(1)
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/app:v1"
	remote := estargz.WithRemote(estargz.WithPlainHTTP(), estargz.WithRetries(0), estargz.WithPrefetch(false),
		estargz.WithCacheDir(t.TempDir(), 0))
	// Nothing read unless asked: the counts are the opens' requests only.
	quiet := []estargz.MountOption{remote, estargz.WithBackgroundFetch(false), estargz.WithPassthrough(false),
		estargz.WithReadAheadKB(0)}
	// Waits until the registry has seen no request for a while.
	settle := func() (int64, int64) {
		m, b := manifests.Load(), blobs.Load()
		for quietFor, deadline := time.Now(), time.Now().Add(10*time.Second); time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			if m2, b2 := manifests.Load(), blobs.Load(); m2 != m || b2 != b {
				m, b, quietFor = m2, b2, time.Now()
			} else if time.Since(quietFor) > 300*time.Millisecond {
				break
			}
		}
		return m, b
	}
	mountLayer := func(digest string, extra ...estargz.MountOption) (string, *estargz.LayerMount, error) {
		mnt := t.TempDir()
		opts := append(append([]estargz.MountOption{estargz.WithRemote(estargz.WithLayerDigest(digest))}, quiet...), extra...)
		m, err := estargz.Mount(context.Background(), ref, mnt, opts...)
		if err == nil {
			t.Cleanup(func() { m.Close() })
		}
		return mnt, m, err
	}

	if _, err := estargz.MountOpenAhead(ref, []string{"sha256:short"}, remote); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("malformed digest: %v", err)
	}
	n, err := estargz.MountOpenAhead(ref, []string{base.Digest(), top.Digest()}, remote)
	if err != nil || n != 2 {
		t.Fatalf("MountOpenAhead: %d started, %v", n, err)
	}
	if n, err := estargz.MountOpenAhead(ref, []string{base.Digest(), top.Digest()}, remote); err != nil || n != 0 {
		t.Errorf("again while held: %d started, %v", n, err)
	}
	m0, b0 := settle()
	if m0 != 1 || b0 == 0 {
		t.Errorf("opening two layers ahead: %d manifest and %d blob requests, want 1 and some", m0, b0)
	}
	baseMnt, _, err := mountLayer(base.Digest(), estargz.WithMountExpectedTOCDigest(base.TOCDigest()))
	if err != nil {
		t.Fatal(err)
	}
	topMnt, _, err := mountLayer(top.Digest(), estargz.WithMountExpectedTOCDigest(top.TOCDigest()))
	if err != nil {
		t.Fatal(err)
	}
	if m, b := manifests.Load(), blobs.Load(); m != m0 || b != b0 {
		t.Errorf("mounting layers opened ahead: %d manifest and %d blob requests more, want none", m-m0, b-b0)
	}
	checkMounted(t, baseMnt, contents(files))
	if got, err := os.ReadFile(filepath.Join(topMnt, "etc/top.txt")); err != nil || string(got) != "top layer\n" {
		t.Errorf("etc/top.txt: %q, %v", got, err)
	}

	// The top layer's open was claimed: mounting it again opens it anew.
	m1, _ := settle()
	if _, _, err := mountLayer(top.Digest()); err != nil {
		t.Fatal(err)
	}
	if m := manifests.Load(); m == m1 {
		t.Error("a mount of a layer not opened ahead made no manifest request")
	}

	// A layer opened ahead is not used by a mount expecting another TOC.
	if n, err := estargz.MountOpenAhead(ref, []string{top.Digest()}, remote); err != nil || n != 1 {
		t.Fatalf("MountOpenAhead: %d started, %v", n, err)
	}
	settle()
	wrong := "sha256:" + strings.Repeat("1", 64)
	if _, _, err := mountLayer(top.Digest(), estargz.WithMountExpectedTOCDigest(wrong)); !errors.Is(err, estargz.ErrDigestMismatch) {
		t.Errorf("wrong TOC digest with the layer opened ahead: %v", err)
	}
}
