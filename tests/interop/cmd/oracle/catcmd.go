package main

// `oracle cat`: what opening a layer costs the reference — open the blob
// (footer, TOC, tree), set up TOC verification and read one file to stdout.
// Benchmarks run it next to `estargz cat` under /usr/bin/time.

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func runCat(args []string) error {
	fs := flag.NewFlagSet("cat", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: oracle cat BLOB PATH")
	}
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fs.Usage()
		os.Exit(2)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := openBlob(io.NewSectionReader(f, 0, st.Size()), "", false)
	if err != nil {
		return err
	}
	if _, err := r.VerifyTOC(r.TOCDigest()); err != nil {
		return fmt.Errorf("VerifyTOC: %w", err)
	}
	file, err := r.OpenFile(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("OpenFile %q: %w", fs.Arg(1), err)
	}
	_, err = io.Copy(os.Stdout, io.NewSectionReader(file, 0, 1<<62))
	return err
}
