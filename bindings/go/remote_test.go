package estargz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// registry is a minimal OCI distribution server (manifests by tag, blobs
// with range requests through http.ServeContent) for one repository.
type registry struct {
	manifests map[string][]byte
	blobs     map[string][]byte
	requests  atomic.Int64
	bytes     atomic.Int64
}

func newRegistry() *registry {
	return &registry{manifests: map[string][]byte{}, blobs: map[string][]byte{}}
}

// serve starts serving reg until the test ends and returns its host:port.
// Push everything first: requests come from the library's own threads,
// so the race detector sees no ordering between a later push and them.
func (reg *registry) serve(t *testing.T) string {
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func (reg *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	reg.requests.Add(1)
	const prefix = "/v2/test/app/"
	path, ok := strings.CutPrefix(req.URL.Path, prefix)
	switch {
	case !ok:
		http.NotFound(w, req)
	case strings.HasPrefix(path, "manifests/"):
		m, ok := reg.manifests[strings.TrimPrefix(path, "manifests/")]
		if !ok {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Write(m)
	case strings.HasPrefix(path, "blobs/"):
		b, ok := reg.blobs[strings.TrimPrefix(path, "blobs/")]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		cw := &countingWriter{ResponseWriter: w, n: &reg.bytes}
		http.ServeContent(cw, req, "", time.Time{}, bytes.NewReader(b))
	default:
		http.NotFound(w, req)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// push stores layers as an image under tag; annotate adds the TOC digest
// annotation to each layer.
func (reg *registry) push(t *testing.T, tag string, annotate bool, layers ...*estargz.Blob) {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	reg.blobs[sha256Digest(config)] = config
	var descs []descriptor
	for _, l := range layers {
		data, err := io.ReadAll(io.NewSectionReader(l, 0, l.CompressedSize()))
		if err != nil {
			t.Fatal(err)
		}
		reg.blobs[l.Digest()] = data
		d := descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: l.Digest(), Size: int64(len(data))}
		if annotate {
			d.Annotations = map[string]string{
				estargz.TOCJSONDigestAnnotation:         l.TOCDigest(),
				estargz.StoreUncompressedSizeAnnotation: fmt.Sprint(l.UncompressedSize()),
			}
		}
		descs = append(descs, d)
	}
	m, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: sha256Digest(config), Size: int64(len(config))},
		"layers":        descs,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.manifests[tag] = m
}

func TestOpenRemote(t *testing.T) {
	// Incompressible bulk after the small files: the blob is much larger
	// than the library's read-ahead window, so laziness shows.
	noise := make([]byte, 2<<20)
	x := uint64(88172645463325252)
	for i := range noise {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		noise[i] = byte(x)
	}
	files := append(fixture(), dir("var/"), dir("var/lib/"), reg("var/lib/bulk.bin", string(noise)))
	want := contents(files)
	build := func(files []file) *estargz.Blob {
		b, err := estargz.Build(bytes.NewReader(makeTar(t, files)), estargz.WithChunkSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	layer0 := build([]file{reg("base", "bottom layer\n")})
	layer1 := build(files)
	reg := newRegistry()
	reg.push(t, "v1", true, layer0, layer1)
	reg.push(t, "single", true, layer1)
	reg.push(t, "unannotated", false, layer1)
	host := reg.serve(t)
	ctx := context.Background()

	r, err := estargz.OpenRemote(ctx, host+"/test/app:v1", estargz.WithPlainHTTP(), estargz.WithLayerDigest(layer1.Digest()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.TOCDigest() != layer1.TOCDigest() {
		t.Errorf("TOC digest %s, want %s", r.TOCDigest(), layer1.TOCDigest())
	}
	before := reg.bytes.Load()
	if got := readFile(t, r, "etc/os-release"); got != want["etc/os-release"] {
		t.Errorf("etc/os-release = %q", got)
	}
	// Lazy: one small file costs far less than the blob.
	if fetched := reg.bytes.Load() - before; fetched >= layer1.CompressedSize()/4 {
		t.Errorf("reading one small file fetched %d of %d bytes", fetched, layer1.CompressedSize())
	}
	checkContents(t, r, want)
	if _, err := r.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}

	// Other selectors, and the other options. The last case reaches the
	// server through WithInsecureRegistry alone (no WithPlainHTTP).
	plain := estargz.WithPlainHTTP()
	for _, c := range []struct {
		ref  string
		opts []estargz.RemoteOption
		file string
	}{
		{"/test/app:v1", []estargz.RemoteOption{plain, estargz.WithLayerIndex(0)}, "base"},
		{"/test/app:single", []estargz.RemoteOption{plain}, "etc/hostname"},
		{"/test/app:unannotated", []estargz.RemoteOption{plain, estargz.WithAllowUnverifiedTOC()}, "etc/hostname"},
		{"/test/app:v1", []estargz.RemoteOption{estargz.WithLayerIndex(1), estargz.WithInsecureRegistry(host),
			estargz.WithCacheDir(t.TempDir(), 0), estargz.WithPrefetch(true), estargz.WithPlatform("linux/amd64")}, "usr/bin/app"},
	} {
		r, err := estargz.OpenRemote(ctx, host+c.ref, c.opts...)
		if err != nil {
			t.Errorf("%s: %v", c.ref, err)
			continue
		}
		if _, err := r.OpenFile(c.file); err != nil {
			t.Errorf("%s: %s: %v", c.ref, c.file, err)
		}
		r.Close()
	}
	// skopeo's and podman's spelling of the same reference.
	if r, err := estargz.OpenRemote(ctx, "docker://"+host+"/test/app:single", plain); err != nil {
		t.Errorf("docker:// reference: %v", err)
	} else {
		r.Close()
	}

	// Errors from the registry side.
	for _, c := range []struct {
		ref  string
		opts []estargz.RemoteOption
		want error
	}{
		{"/test/app:v1", nil, estargz.ErrInvalidArgument},                                        // two layers, no selector
		{"/test/app:v1", []estargz.RemoteOption{estargz.WithLayerIndex(5)}, estargz.ErrNotFound}, // no such layer
		{"/test/app:v1", []estargz.RemoteOption{estargz.WithLayerDigest("sha256:00")}, estargz.ErrNotFound},
		{"/test/app:unannotated", nil, estargz.ErrInvalidArgument}, // TOC not anchored
		{"/test/app:nope", nil, estargz.ErrNotFound},               // unknown tag
		{"/test/app:v1", []estargz.RemoteOption{estargz.WithLayerIndex(0), estargz.WithPlatform("x")}, estargz.ErrInvalidArgument},
		// Not a digest (the library would read it as an index).
		{"/test/app:v1", []estargz.RemoteOption{estargz.WithLayerDigest("1")}, estargz.ErrInvalidArgument},
	} {
		_, err := estargz.OpenRemote(ctx, host+c.ref, append(c.opts, estargz.WithPlainHTTP(), estargz.WithRetries(0))...)
		if !errors.Is(err, c.want) {
			t.Errorf("%s %v: %v, want %v", c.ref, c.opts, err, c.want)
		}
	}
}

func TestOpenRemoteErrors(t *testing.T) {
	ctx := context.Background()
	base := settledHandles()

	// Nothing listens on the port: a network error, fast (no retries).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = estargz.OpenRemote(ctx, addr+"/test/app:v1", estargz.WithPlainHTTP(), estargz.WithRetries(0))
	if !errors.Is(err, estargz.ErrNetwork) {
		t.Errorf("connection refused: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("connection refused took %v", d)
	}

	for _, ref := range []string{"", "no spaces allowed/x y", "host/UPPER:tag", "a\x00b/c:d"} {
		if _, err := estargz.OpenRemote(ctx, ref, estargz.WithPlainHTTP()); !errors.Is(err, estargz.ErrInvalidArgument) {
			t.Errorf("reference %q: %v", ref, err)
		}
	}
	if _, err := estargz.OpenRemote(ctx, "127.0.0.1:1/a:b", estargz.WithRetries(-1)); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("negative retries: %v", err)
	}

	// A server that accepts and never answers: the context ends the wait,
	// the timeout ends the request.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = estargz.OpenRemote(cctx, hang.Addr().String()+"/test/app:v1", estargz.WithPlainHTTP(),
		estargz.WithRetries(0), estargz.WithRequestTimeout(time.Second))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("cancelled open: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	_, err = estargz.OpenRemote(ctx, hang.Addr().String()+"/test/app:v1", estargz.WithPlainHTTP(),
		estargz.WithRetries(0), estargz.WithRequestTimeout(300*time.Millisecond))
	if !errors.Is(err, estargz.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Errorf("stalled registry: %v after %v", err, time.Since(start))
	}
	// The abandoned open frees its options once its request times out.
	waitForHandles(t, base)
}

// OpenRemote prefetches the prioritized files by default, as the CLI and
// the mount do: reading one then makes no request. WithPrefetch(false)
// leaves it to the first read.
func TestOpenRemotePrefetchesByDefault(t *testing.T) {
	files := append(fixture(), dir("opt/"), reg("opt/first.txt", strings.Repeat("prioritized\n", 1000)))
	b, err := estargz.Build(bytes.NewReader(makeTar(t, files)),
		estargz.WithChunkSize(64<<10), estargz.WithPrioritizedFiles([]string{"opt/first.txt"}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := newRegistry()
	reg.push(t, "v1", true, b)
	ref := reg.serve(t) + "/test/app:v1"
	want := contents(files)["opt/first.txt"]

	for _, c := range []struct {
		opts         []estargz.RemoteOption
		readRequests bool
	}{
		{nil, false},
		{[]estargz.RemoteOption{estargz.WithPrefetch(true)}, false},
		{[]estargz.RemoteOption{estargz.WithPrefetch(false)}, true},
	} {
		r, err := estargz.OpenRemote(context.Background(), ref, append(c.opts, estargz.WithPlainHTTP())...)
		if err != nil {
			t.Fatal(err)
		}
		before := reg.requests.Load()
		if got := readFile(t, r, "opt/first.txt"); got != want {
			t.Errorf("opt/first.txt: %d bytes, want %d", len(got), len(want))
		}
		if made := reg.requests.Load() - before; (made > 0) != c.readRequests {
			t.Errorf("%d options: reading the prioritized file made %d requests", len(c.opts), made)
		}
		r.Close()
	}
}
