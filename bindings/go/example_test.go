package estargz_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"strconv"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// exampleTar is a small layer: what an image build or `docker save` gives.
func exampleTar() io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"etc/", "usr/", "usr/bin/"} {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir})
	}
	for _, f := range []struct{ name, body string }{
		{"etc/os-release", "NAME=demo\n"},
		{"usr/bin/app", "#!/bin/sh\necho hello\n"},
	} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	return &buf
}

// Converting a layer, as an image converter (containerd's nerdctl
// image convert, containers-storage's zstd:chunked/estargz push path)
// would: the blob is the new layer, and its digests and annotations go
// into the layer descriptor.
func ExampleBuild() {
	blob, err := estargz.Build(exampleTar(),
		estargz.WithPrioritizedFiles([]string{"usr/bin/app"}), // prefetched first
		estargz.WithContext(context.Background()))
	if err != nil {
		log.Fatal(err)
	}
	defer blob.Close()

	// Copy the blob to the content store (here: a temporary file).
	out, err := os.CreateTemp("", "layer-*.esgz")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(out.Name())
	n, err := io.Copy(out, blob)
	if err != nil {
		log.Fatal(err)
	}
	out.Close()

	descriptor := map[string]string{
		"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
		"digest":    blob.Digest(),
		"size":      strconv.FormatInt(blob.CompressedSize(), 10),
		// Annotations the snapshotter and containers-storage look for.
		estargz.TOCJSONDigestAnnotation:         blob.TOCDigest(),
		estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(blob.UncompressedSize(), 10),
	}
	fmt.Println("copied whole blob:", n == blob.CompressedSize())
	fmt.Println("annotated:", descriptor[estargz.TOCJSONDigestAnnotation] != "")
	// The config's rootfs.diff_ids entry for this layer.
	fmt.Println("diff_id is a digest:", len(blob.DiffID()) == len("sha256:")+64)
	// Output:
	// copied whole blob: true
	// annotated: true
	// diff_id is a digest: true
}

// Reading a layer lazily, as a snapshotter does: the blob is an
// io.ReaderAt (a registry client, a local content store, ...) and the TOC
// digest comes from the layer's annotation. Only the parts read are
// fetched, each checked against its chunk digest.
func ExampleOpen() {
	blob, err := estargz.Build(exampleTar())
	if err != nil {
		log.Fatal(err)
	}
	defer blob.Close()
	annotation := blob.TOCDigest() // from the manifest in real use

	r, err := estargz.Open(blob, blob.CompressedSize(),
		estargz.WithExpectedTOCDigest(annotation),
		estargz.WithReadContext(context.Background()))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	e, err := r.Lookup("usr/bin/app")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Path, e.Type, e.Mode, e.Size)
	f, err := r.OpenFile("usr/bin/app")
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(os.Stdout, f)
	// Output:
	// usr/bin/app reg -rwxr-xr-x 21
	// #!/bin/sh
	// echo hello
}

// The tree of a blob as an fs.FS, for code written against io/fs
// (walking, globbing, http.FileServer(http.FS(...)), ...).
func ExampleReader_FS() {
	blob, err := estargz.Build(exampleTar())
	if err != nil {
		log.Fatal(err)
	}
	defer blob.Close()
	r, err := estargz.Open(blob, blob.CompressedSize())
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	fs.WalkDir(r.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fmt.Println(path, d.Type())
		return nil
	})
	release, err := fs.ReadFile(r.FS(), "etc/os-release")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", release)
	// Output:
	// . d---------
	// .no.prefetch.landmark ----------
	// etc d---------
	// etc/os-release ----------
	// usr d---------
	// usr/bin d---------
	// usr/bin/app ----------
	// NAME=demo
}

// Errors carry the library's code: compare with errors.Is against the
// sentinels (and io/fs's), or get the details with errors.As.
func ExampleError() {
	blob, err := estargz.Build(exampleTar())
	if err != nil {
		log.Fatal(err)
	}
	defer blob.Close()
	wrong := "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	_, err = estargz.Open(blob, blob.CompressedSize(), estargz.WithExpectedTOCDigest(wrong))
	var e *estargz.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code.String(), errors.Is(err, estargz.ErrDigestMismatch))
	}
	// Output:
	// ESTARGZ_DIGEST_MISMATCH true
}

// Reading a layer straight from a registry (not run: it needs one).
func ExampleOpenRemote() {
	ctx := context.Background()
	r, err := estargz.OpenRemote(ctx, "ghcr.io/org/app:v1",
		estargz.WithLayerDigest("sha256:..."), // from the manifest
		estargz.WithCacheDir("/var/cache/estargz", 0))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, err := fs.ReadFile(r.FS(), "etc/os-release")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", b)
}
