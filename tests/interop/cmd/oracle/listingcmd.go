package main

// listing: print the canonical listing of a plain tar.

import (
	"bufio"
	"flag"
	"fmt"
	"os"
)

func runListing(args []string) error {
	fs := flag.NewFlagSet("listing", flag.ExitOnError)
	fs.BoolVar(&truncateMTime, "truncate-mtime", false, "whole seconds of mtimes (floor), not rounded")
	fs.Usage = func() { fmt.Fprintln(fs.Output(), "usage: oracle listing [--truncate-mtime] IN.tar") }
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	l, err := listingFromTar(bufio.NewReader(f))
	if err != nil {
		return err
	}
	out, err := marshalListing(l)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
