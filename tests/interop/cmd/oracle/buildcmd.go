package main

// build: run upstream estargz.Build on a tar file (for benchmarks).

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

func runBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	level := fs.Int("level", 9, "gzip compression level")
	chunkSize := fs.Int("chunk-size", 0, "chunk size in bytes (0: upstream default, 4 MiB)")
	minChunkSize := fs.Int("min-chunk-size", 0, "min chunk size in bytes (0: off)")
	parallelism := fs.Int("parallelism", 0, "GOMAXPROCS during Build, which sets its part count in v0.18.2 (0: all CPUs)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: oracle build [--level 9] [--chunk-size N] [--min-chunk-size N] [--parallelism N] IN.tar OUT.esgz")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fs.Usage()
		os.Exit(2)
	}
	if *parallelism > 0 {
		runtime.GOMAXPROCS(*parallelism)
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
	out, err := os.Create(fs.Arg(1))
	if err != nil {
		return err
	}
	start := time.Now()
	bw := bufio.NewWriterSize(out, 1<<20)
	opts := buildOpts{Level: *level, ChunkSize: *chunkSize, MinChunkSize: *minChunkSize}
	res, err := buildUpstream(io.NewSectionReader(in, 0, st.Size()), opts, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"tocDigest":        res.TOCDigest,
		"diffID":           res.DiffID,
		"size":             res.Size,
		"uncompressedSize": res.UncompressedSize,
		"seconds":          elapsed,
	})
}
