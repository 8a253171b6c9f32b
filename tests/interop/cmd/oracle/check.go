package main

// check: open a blob with the upstream reader, verify it, read everything, and
// compare the reader's listing with an expected one.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/externaltoc"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
)

var errCheckFailed = errors.New("check failed")

func runCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	blobPath := fs.String("blob", "", "eStargz blob to check (required)")
	expectPath := fs.String("expect", "", "expected canonical listing, JSON (required)")
	tocDigest := fs.String("toc-digest", "", "TOC digest the blob must have (sha256:...)")
	externalTOC := fs.String("external-toc", "", "TOC gzip member of an external-TOC blob")
	minChunk := fs.Bool("min-chunk", false, "blob was built with a min chunk size: verify chunks directly instead of with VerifyTOC")
	zstdChunked := fs.Bool("zstdchunked", false, "blob is zstd:chunked v1: open it with upstream's zstdchunked decompressor")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: oracle check --blob PATH --expect expected.json [--toc-digest D] [--external-toc toc.gz] [--min-chunk] [--zstdchunked]")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if *blobPath == "" || *expectPath == "" || fs.NArg() != 0 {
		fs.Usage()
		os.Exit(2)
	}

	var expected []Entry
	raw, err := os.ReadFile(*expectPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		return fmt.Errorf("%s: %w", *expectPath, err)
	}

	f, err := os.Open(*blobPath)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := openBlob(io.NewSectionReader(f, 0, st.Size()), *externalTOC, *zstdChunked)
	if err != nil {
		return err
	}
	if *tocDigest != "" && r.TOCDigest().String() != *tocDigest {
		return fmt.Errorf("TOC digest %s, want %s", r.TOCDigest(), *tocDigest)
	}

	// Upstream's verifier keys chunk digests by blob offset, so it rejects
	// min-chunk-size blobs whose members hold several chunks; those are checked
	// per chunk below instead.
	var verifier estargz.TOCEntryVerifier
	if !*minChunk {
		if verifier, err = r.VerifyTOC(r.TOCDigest()); err != nil {
			return fmt.Errorf("VerifyTOC: %w", err)
		}
	} else if _, err := r.Verifiers(); err != nil {
		fmt.Println("info: upstream Verifiers() rejects this min-chunk blob as expected:", err)
	}

	got, problems, err := listingFromReader(r, verifier)
	if err != nil {
		return err
	}
	c := compareListings(expected, got)
	c.diffs = append(problems, c.diffs...)
	if !c.report(len(expected)) {
		return errCheckFailed
	}
	return nil
}

// openBlob opens a blob with the upstream reader; tocPath selects external-TOC
// mode, zstdChunked upstream's zstd:chunked (v1) decompressor.
func openBlob(sr *io.SectionReader, tocPath string, zstdChunked bool) (*estargz.Reader, error) {
	var opts []estargz.OpenOption
	if zstdChunked {
		opts = append(opts, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	}
	if tocPath != "" {
		toc, err := os.ReadFile(tocPath)
		if err != nil {
			return nil, err
		}
		provide := func() ([]byte, error) { return toc, nil }
		opts = append(opts, estargz.WithDecompressors(externaltoc.NewGzipDecompressor(provide)))
	}
	r, err := estargz.Open(sr, opts...)
	if err != nil {
		return nil, fmt.Errorf("estargz.Open: %w", err)
	}
	return r, nil
}

// readRegular reads a regular file fully through OpenFile, then chunk by chunk
// through ChunkEntryForOffset, checking every chunk's digest (and upstream's
// verifier when given). It returns the file's SHA-256 and any problems found.
func readRegular(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, ent *estargz.TOCEntry) (string, []string) {
	var problems []string
	bad := func(format string, a ...any) {
		problems = append(problems, fmt.Sprintf("%q: ", name)+fmt.Sprintf(format, a...))
	}
	sr, err := r.OpenFile(name)
	if err != nil {
		bad("OpenFile: %v", err)
		return "", problems
	}
	if sr.Size() != ent.Size {
		bad("OpenFile size %d, TOC size %d", sr.Size(), ent.Size)
	}
	whole := sha256.New()
	bufSize := min(max(ent.Size, 1), 8<<20)
	if n, err := io.CopyBuffer(whole, io.NewSectionReader(sr, 0, sr.Size()), make([]byte, bufSize)); err != nil || n != ent.Size {
		bad("reading through OpenFile: %d of %d bytes, %v", n, ent.Size, err)
	}
	sum := hex.EncodeToString(whole.Sum(nil))
	if ent.Digest != "" && ent.Digest != "sha256:"+sum {
		bad("content hashes to sha256:%s, TOC digest %s", sum, ent.Digest)
	}

	for off := int64(0); off < ent.Size; {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			bad("no chunk for offset %d", off)
			break
		}
		if ce.ChunkOffset != off || ce.ChunkSize <= 0 || off+ce.ChunkSize > ent.Size {
			bad("chunk for offset %d has chunkOffset %d, chunkSize %d", off, ce.ChunkOffset, ce.ChunkSize)
			break
		}
		if last, ok := r.ChunkEntryForOffset(name, off+ce.ChunkSize-1); !ok || last != ce {
			bad("last byte of chunk at %d maps to another chunk", off)
		}
		buf := make([]byte, ce.ChunkSize)
		if n, err := sr.ReadAt(buf, off); int64(n) != ce.ChunkSize || (err != nil && err != io.EOF) {
			bad("reading chunk at %d: %d of %d bytes, %v", off, n, ce.ChunkSize, err)
			break
		}
		d := sha256.Sum256(buf)
		if got := "sha256:" + hex.EncodeToString(d[:]); got != ce.ChunkDigest {
			bad("chunk at %d hashes to %s, chunkDigest %q", off, got, ce.ChunkDigest)
		}
		if v != nil {
			if dv, err := v.Verifier(ce); err != nil {
				bad("upstream verifier for chunk at %d: %v", off, err)
			} else if _, _ = dv.Write(buf); !dv.Verified() {
				bad("upstream verifier rejects chunk at %d", off)
			}
		}
		off += ce.ChunkSize
	}
	return sum, problems
}
