// Command oracle drives the upstream Go eStargz package
// (github.com/containerd/stargz-snapshotter/estargz) as a reference for
// estargz-rs interop tests and benchmarks. See ../../README.md.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage: oracle COMMAND [flags] [args]

commands:
  gen OUTDIR          write every test shape (input.tar, upstream blob, expected listing)
  check --blob B --expect E.json [--toc-digest D] [--external-toc T] [--min-chunk]
                      read and verify a blob with the upstream reader, compare listings
  build IN.tar OUT.esgz
                      convert a tar with upstream estargz.Build, print JSON stats
  listing [--truncate-mtime] IN.tar
                      print the canonical listing of a plain tar
  cat BLOB PATH       open a blob with the upstream reader and print one file
                      (what opening a layer costs, for benchmarks)
  zstdchunked [--chunk-size N] IN.tar OUT.zst
                      build a zstd:chunked v1 blob with upstream estargz/zstdchunked,
                      print JSON stats and its annotations
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	commands := map[string]func([]string) error{
		"gen":         runGen,
		"check":       runCheck,
		"build":       runBuild,
		"listing":     runListing,
		"cat":         runCat,
		"zstdchunked": runZstdChunked,
	}
	run, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		if !errors.Is(err, errCheckFailed) {
			fmt.Fprintf(os.Stderr, "oracle %s: %v\n", os.Args[1], err)
		}
		os.Exit(1)
	}
}
