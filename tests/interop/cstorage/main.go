// Command cstorage drives containers/storage's zstd:chunked compressor
// (pkg/chunked/compressor, the v2 generation: 64-byte footer, tar-split
// frame) as a reference for estargz-rs interop tests. See ../README.md.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containers/storage/pkg/chunked/compressor"
	"github.com/containers/storage/pkg/reexec"
)

const usage = `usage: cstorage build [--level N] IN.tar OUT.zst
  compress a tar with containers/storage's ZstdCompressor and print JSON:
  the annotations it sets, the blob size and the seconds it took
usage: cstorage pull --annotations FILE.json BLOB
  (root) pull BLOB partially into a fresh containers/storage store (overlay)
  as Podman does: its TOC and tar-split read from the positions in the
  annotations, files fetched by range; then export the layer, which
  containers/storage rebuilds from the tar-split and the files, and print
  JSON: {"diffID": digest of the export, "tocDigest", "files"}
`

func main() {
	// containers/storage re-executes this binary for some archive work.
	if reexec.Init() {
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = runBuild(os.Args[2:])
	case "pull":
		err = runPull(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cstorage %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func runBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	level := fs.Int("level", 0, "zstd level (0: the compressor's default)")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(fs.Arg(1))
	if err != nil {
		return err
	}
	start := time.Now()
	bw := bufio.NewWriterSize(out, 1<<20)
	annotations := map[string]string{}
	var lvl *int
	if *level > 0 {
		lvl = level
	}
	w, err := compressor.ZstdCompressor(bw, annotations, lvl)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, in)
	err = errors.Join(err, w.Close(), bw.Flush(), out.Close())
	if err != nil {
		return err
	}
	st, err := os.Stat(fs.Arg(1))
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"annotations": annotations,
		"size":        st.Size(),
		"seconds":     time.Since(start).Seconds(),
	})
}
