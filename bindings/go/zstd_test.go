package estargz_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// rawZstdFrame is a zstd frame holding data in one raw (stored) block:
// enough to make small zstd:chunked fixtures without a zstd encoder.
func rawZstdFrame(data []byte) []byte {
	// Magic; frame header: single segment, 4-byte content size.
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0}
	out = binary.LittleEndian.AppendUint32(out, uint32(len(data)))
	// Block header: last block, raw, its size.
	h := uint32(len(data))<<3 | 1
	out = append(out, byte(h), byte(h>>8), byte(h>>16))
	return append(out, data...)
}

func skippableFrame(payload []byte) []byte {
	out := []byte{0x50, 0x2a, 0x4d, 0x18}
	out = binary.LittleEndian.AppendUint32(out, uint32(len(payload)))
	return append(out, payload...)
}

// zstdChunkedV1 is a zstd:chunked v1 blob (40-byte footer) with one file.
func zstdChunkedV1(name string, content []byte) []byte {
	blob := rawZstdFrame(make([]byte, 512)) // where a tar header would be
	offset := len(blob)
	blob = append(blob, rawZstdFrame(content)...)
	toc := fmt.Sprintf(`{"version":1,"entries":[{"type":"reg","name":%q,"size":%d,"digest":"sha256:%x","offset":%d}]}`,
		name, len(content), sha256.Sum256(content), offset)
	compressed := rawZstdFrame([]byte(toc))
	tocOffset := uint64(len(blob) + 8)
	blob = append(blob, skippableFrame(compressed)...)
	var footer []byte
	for _, v := range []uint64{tocOffset, uint64(len(compressed)), uint64(len(toc)), 1} {
		footer = binary.LittleEndian.AppendUint64(footer, v)
	}
	footer = append(footer, "GnUlInUx"...)
	return append(blob, skippableFrame(footer)...)
}

func TestZstdChunkedFormatIsReported(t *testing.T) {
	content := []byte("hello from zstd:chunked\n")
	data := zstdChunkedV1("dir/hello.txt", content)
	r, err := estargz.Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	info, err := r.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != estargz.FormatZstdChunked || info.ZstdChunkedGeneration != 1 ||
		info.FooterKind != estargz.FooterZstdChunked || info.FooterSize != 48 {
		t.Errorf("Info = %+v", info)
	}
	f, err := r.OpenFile("dir/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("read %q, %v; want %q", got, err, content)
	}
	if _, err := r.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestBuildZstdChunked(t *testing.T) {
	tarball := makeTar(t, fixture())
	for _, c := range []struct {
		format     string
		generation int
	}{{estargz.FormatZstdChunked, 2}, {estargz.FormatZstdChunkedV1, 1}} {
		blob, err := estargz.Build(bytes.NewReader(tarball), estargz.WithFormat(c.format), estargz.WithCompressionLevel(19))
		if err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		data, err := io.ReadAll(blob)
		blob.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, err := estargz.Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		info, err := r.Info()
		if err != nil || info.Format != estargz.FormatZstdChunked || info.ZstdChunkedGeneration != c.generation {
			t.Errorf("%s: Info = %+v, %v", c.format, info, err)
		}
		checkZstdDescriptor(t, blob, info, r.TOCDigest(), c.generation)
		if _, err := r.Verify(); err != nil {
			t.Errorf("%s: Verify: %v", c.format, err)
		}
		r.Close()
	}
	if _, err := estargz.Build(bytes.NewReader(tarball), estargz.WithFormat("zstd")); !errors.Is(err, estargz.ErrInvalidArgument) {
		t.Errorf("unknown format: %v", err)
	}
}

// checkZstdDescriptor checks what a pusher takes from a zstd:chunked Blob
// against what the reader finds in the blob.
func checkZstdDescriptor(t *testing.T, blob *estargz.Blob, info estargz.Info, tocDigest string, generation int) {
	t.Helper()
	if blob.MediaType() != estargz.MediaTypeLayerZstd {
		t.Errorf("MediaType = %q", blob.MediaType())
	}
	want := estargz.FormatZstdChunked
	prefix := "io.github.containers.zstd-chunked."
	if generation == 1 {
		want, prefix = estargz.FormatZstdChunkedV1, "io.containers.zstd-chunked."
	}
	if blob.Format() != want {
		t.Errorf("Format = %q, want %q", blob.Format(), want)
	}
	if blob.ManifestChecksum() == "" || blob.ManifestChecksum() != info.ManifestChecksum {
		t.Errorf("ManifestChecksum = %q, reader %q", blob.ManifestChecksum(), info.ManifestChecksum)
	}
	manifest, ok := blob.ManifestPosition()
	if !ok || info.ManifestPosition == nil || manifest != *info.ManifestPosition || manifest.Offset != info.TOCOffset {
		t.Errorf("ManifestPosition = %+v %v, reader %+v (TOC offset %d)", manifest, ok, info.ManifestPosition, info.TOCOffset)
	}
	a := blob.Annotations()
	if a[prefix+"manifest-checksum"] != info.ManifestChecksum {
		t.Errorf("annotations %v: manifest checksum, reader %q", a, info.ManifestChecksum)
	}
	if got, want := a[prefix+"manifest-position"], fmt.Sprintf("%d:%d:%d:1", manifest.Offset, manifest.CompressedLen, manifest.UncompressedLen); got != want {
		t.Errorf("manifest-position annotation %q, want %q", got, want)
	}
	split, ok := blob.TarSplitPosition()
	if generation == 2 {
		if !ok || info.TarSplitPosition == nil || split != *info.TarSplitPosition || split.UncompressedLen == 0 {
			t.Errorf("TarSplitPosition = %+v %v, reader %+v", split, ok, info.TarSplitPosition)
		}
		if got, want := a[prefix+"tarsplit-position"], fmt.Sprintf("%d:%d:%d", split.Offset, split.CompressedLen, split.UncompressedLen); got != want {
			t.Errorf("tarsplit-position annotation %q, want %q", got, want)
		}
		// containers/storage refuses a layer that also has the eStargz TOC digest.
		if len(a) != 3 {
			t.Errorf("v2 annotations %v", a)
		}
	} else {
		if ok || info.TarSplitPosition != nil {
			t.Errorf("v1 TarSplitPosition = %+v %v, reader %+v", split, ok, info.TarSplitPosition)
		}
		if len(a) != 4 || a[estargz.TOCJSONDigestAnnotation] != tocDigest ||
			a[estargz.StoreUncompressedSizeAnnotation] != fmt.Sprint(blob.UncompressedSize()) {
			t.Errorf("v1 annotations %v (TOC digest %s)", a, tocDigest)
		}
	}
}

func TestBuildEStargzDescriptor(t *testing.T) {
	blob, err := estargz.Build(bytes.NewReader(makeTar(t, fixture())))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	if blob.Format() != estargz.FormatEStargz || blob.MediaType() != estargz.MediaTypeLayerGzip || blob.ManifestChecksum() != "" {
		t.Errorf("Format %q, MediaType %q, ManifestChecksum %q", blob.Format(), blob.MediaType(), blob.ManifestChecksum())
	}
	if _, ok := blob.ManifestPosition(); ok {
		t.Error("eStargz has a manifest position")
	}
	if _, ok := blob.TarSplitPosition(); ok {
		t.Error("eStargz has a tar-split position")
	}
	a := blob.Annotations()
	if len(a) != 2 || a[estargz.TOCJSONDigestAnnotation] != blob.TOCDigest() ||
		a[estargz.StoreUncompressedSizeAnnotation] != fmt.Sprint(blob.UncompressedSize()) {
		t.Errorf("annotations %v", a)
	}
	a["x"] = "y"
	if _, ok := blob.Annotations()["x"]; ok {
		t.Error("Annotations shares its map")
	}
}
