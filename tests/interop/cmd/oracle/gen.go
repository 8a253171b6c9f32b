package main

// gen: write every shape's input tar, upstream blob and expected listing.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

func runGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	only := fs.String("only", "", "comma-separated shape names to generate (default: all)")
	parallelism := fs.Int("parallelism", 2, "GOMAXPROCS while building; upstream Build splits into that many parts")
	list := fs.Bool("list", false, "only print the shape names")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: oracle gen [--only a,b] [--parallelism N] OUTDIR")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	shapes := allShapes()
	if *list {
		for _, sh := range shapes {
			fmt.Println(sh.name)
		}
		return nil
	}
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	if *only != "" {
		want := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			want[n] = true
		}
		var picked []shape
		for _, sh := range shapes {
			if want[sh.name] {
				picked = append(picked, sh)
				delete(want, sh.name)
			}
		}
		for n := range want {
			return fmt.Errorf("unknown shape %q", n)
		}
		shapes = picked
	}
	runtime.GOMAXPROCS(*parallelism)
	start := time.Now()
	for _, sh := range shapes {
		if err := genShape(filepath.Join(fs.Arg(0), sh.name), sh); err != nil {
			return fmt.Errorf("shape %s: %w", sh.name, err)
		}
	}
	fmt.Printf("gen: %d shapes in %.2fs\n", len(shapes), time.Since(start).Seconds())
	return nil
}

func genShape(dir string, sh shape) error {
	input, err := writeTar(sh.entries, sh.tar)
	if err != nil {
		return err
	}
	listing, err := listingFromTar(bytes.NewReader(input))
	if err != nil {
		return fmt.Errorf("listing input: %w", err)
	}
	expected, err := marshalListing(listing)
	if err != nil {
		return err
	}
	opts := sh.opts
	if opts.Prioritized == nil {
		opts.Prioritized = []string{}
	}
	meta, err := json.MarshalIndent(opts, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	blob, err := os.Create(filepath.Join(dir, "blob.esgz"))
	if err != nil {
		return err
	}
	res, err := buildUpstream(io.NewSectionReader(bytes.NewReader(input), 0, int64(len(input))), opts, blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"input.tar":      input,
		"expected.json":  expected,
		"meta.json":      append(meta, '\n'),
		"toc-digest.txt": []byte(res.TOCDigest),
		"diffid.txt":     []byte(res.DiffID),
	}
	if res.ExternalTOC != nil {
		files["toc.gz"] = res.ExternalTOC
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	note := ""
	if len(res.Missed) > 0 {
		note = fmt.Sprintf(" (prioritized not found upstream: %q)", res.Missed)
	}
	fmt.Printf("%-28s %4d entries, blob %8d bytes%s\n", sh.name, len(listing), res.Size, note)
	return nil
}
