package main

// Producing blobs with the upstream Go package (estargz.Build, or the low-level
// writer in lossless mode, as upstream's keep-diff-id converter does).

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/externaltoc"
)

// buildOpts are the options of a shape (and of the build subcommand); the JSON
// form is meta.json. Zero values mean "upstream default".
type buildOpts struct {
	ChunkSize    int      `json:"chunkSize"`
	MinChunkSize int      `json:"minChunkSize"`
	Level        int      `json:"level"`
	Prioritized  []string `json:"prioritized"`
	ExternalTOC  bool     `json:"externalTOC"`
	KeepDiffID   bool     `json:"keepDiffID"`
}

func (o buildOpts) level() int {
	if o.Level == 0 {
		return gzip.BestCompression
	}
	return o.Level
}

// buildResult describes a blob written by buildUpstream.
type buildResult struct {
	TOCDigest        string
	DiffID           string
	Size             int64
	UncompressedSize int64
	ExternalTOC      []byte   // the TOC gzip member (external-TOC modes only)
	Missed           []string // prioritized names upstream did not find
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// buildUpstream converts the tar in `in` and writes the blob to out.
func buildUpstream(in *io.SectionReader, o buildOpts, out io.Writer) (*buildResult, error) {
	if o.KeepDiffID {
		return buildLossless(in, o, out)
	}
	var opts []estargz.Option
	if o.ChunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(o.ChunkSize))
	}
	if o.MinChunkSize > 0 {
		opts = append(opts, estargz.WithMinChunkSize(o.MinChunkSize))
	}
	var etoc *externaltoc.GzipCompressor
	if o.ExternalTOC {
		etoc = externaltoc.NewGzipCompressorWithLevel(o.level())
		opts = append(opts, estargz.WithCompression(&externaltoc.GzipCompression{
			GzipCompressor:   etoc,
			GzipDecompressor: externaltoc.NewGzipDecompressor(nil),
		}))
	} else {
		opts = append(opts, estargz.WithCompressionLevel(o.level()))
	}
	var missed []string
	if len(o.Prioritized) > 0 {
		opts = append(opts, estargz.WithPrioritizedFiles(o.Prioritized), estargz.WithAllowPrioritizeNotFound(&missed))
	}
	blob, err := estargz.Build(in, opts...)
	if err != nil {
		return nil, fmt.Errorf("estargz.Build: %w", err)
	}
	defer blob.Close()
	cw := &countingWriter{w: out}
	if _, err := io.Copy(cw, blob); err != nil {
		return nil, fmt.Errorf("reading built blob: %w", err)
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return nil, err
	}
	res := &buildResult{
		TOCDigest:        blob.TOCDigest().String(),
		DiffID:           blob.DiffID().String(),
		Size:             cw.n,
		UncompressedSize: usize,
		Missed:           missed,
	}
	if etoc != nil {
		if res.ExternalTOC, err = externalTOCBytes(etoc); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// buildLossless is keep-diff-id mode: external TOC, no reordering, input bytes kept.
func buildLossless(in *io.SectionReader, o buildOpts, out io.Writer) (*buildResult, error) {
	if !o.ExternalTOC || len(o.Prioritized) > 0 {
		return nil, errors.New("keep-diff-id needs externalTOC and no prioritized files")
	}
	etoc := externaltoc.NewGzipCompressorWithLevel(o.level())
	cw := &countingWriter{w: out}
	w := estargz.NewWriterWithCompressor(cw, etoc)
	w.ChunkSize = o.ChunkSize
	w.MinChunkSize = o.MinChunkSize
	if err := w.AppendTarLossLess(io.NewSectionReader(in, 0, in.Size())); err != nil {
		return nil, fmt.Errorf("AppendTarLossLess: %w", err)
	}
	tocDigest, err := w.Close()
	if err != nil {
		return nil, fmt.Errorf("closing writer: %w", err)
	}
	// The point of the mode: the DiffID is the input's own digest.
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(in, 0, in.Size())); err != nil {
		return nil, err
	}
	if want := fmt.Sprintf("sha256:%x", h.Sum(nil)); w.DiffID() != want {
		return nil, fmt.Errorf("lossless DiffID %s differs from the input's %s", w.DiffID(), want)
	}
	toc, err := externalTOCBytes(etoc)
	if err != nil {
		return nil, err
	}
	return &buildResult{
		TOCDigest:        tocDigest.String(),
		DiffID:           w.DiffID(),
		Size:             cw.n,
		UncompressedSize: in.Size(),
		ExternalTOC:      toc,
	}, nil
}

func externalTOCBytes(c *externaltoc.GzipCompressor) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := c.WriteTOCTo(&buf); err != nil {
		return nil, fmt.Errorf("external TOC: %w", err)
	}
	return buf.Bytes(), nil
}
