package main

// zstdchunked: build a zstd:chunked v1 blob with upstream's estargz/zstdchunked
// compressor (the eStargz builder with zstd frames, a 40-byte footer).

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
)

// zstdCompression pairs upstream's zstdchunked compressor and decompressor
// into the estargz.Compression that Build takes.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func runZstdChunked(args []string) error {
	fs := flag.NewFlagSet("zstdchunked", flag.ExitOnError)
	chunkSize := fs.Int("chunk-size", 0, "chunk size in bytes (0: upstream default, 4 MiB)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: oracle zstdchunked [--chunk-size N] IN.tar OUT.zst")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fs.Usage()
		os.Exit(2)
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	metadata := map[string]string{}
	opts := []estargz.Option{estargz.WithCompression(&zstdCompression{
		// ctr-remote's default level.
		&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: metadata},
		&zstdchunked.Decompressor{},
	})}
	if *chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(*chunkSize))
	}
	start := time.Now()
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("estargz.Build: %w", err)
	}
	defer blob.Close()
	out, err := os.Create(fs.Arg(1))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	cw := &countingWriter{w: bw}
	_, err = io.Copy(cw, blob)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"tocDigest":        blob.TOCDigest().String(),
		"diffID":           blob.DiffID().String(),
		"size":             cw.n,
		"uncompressedSize": usize,
		"annotations":      metadata,
		"seconds":          time.Since(start).Seconds(),
	})
}
