package main

// Building input tars with Go's archive/tar, and deterministic file content.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"
)

// trailingZeros is appended after the tar end marker (as upstream's test helper
// does) so that lossless (keep-diff-id) mode has to carry bytes past the marker.
const trailingZeros = 100

// Fixed timestamps used by the shapes.
var (
	fixedTime = time.Unix(1600000000, 0) // 2020-09-13T12:26:40Z
	unixEpoch = time.Unix(0, 0)
	zeroTime  = time.Time{}
)

// tarEntry is one entry of an input tar: a header plus the payload of a regular file.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// tarOpts are applied to every entry of a shape when the tar is written.
type tarOpts struct {
	prefix string     // prepended to every name (and hardlink target)
	format tar.Format // forced header format; FormatUnknown lets archive/tar choose
}

// writeTar serialises entries with archive/tar, then appends trailingZeros zero bytes.
func writeTar(entries []tarEntry, o tarOpts) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Name = o.prefix + h.Name
		if h.Typeflag == tar.TypeLink {
			h.Linkname = o.prefix + h.Linkname
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if h.Format == tar.FormatUnknown {
			h.Format = o.format
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar header %q: %w", h.Name, err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("tar data %q: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	buf.Write(make([]byte, trailingZeros))
	return buf.Bytes(), nil
}

// Entry constructors. Modes are permission bits; uid/gid default to 0.

func dirEntry(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: fixedTime}}
}

func fileEntry(name string, mode int64, data []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: fixedTime}, data: data}
}

func symlinkEntry(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0777, ModTime: fixedTime}}
}

func hardlinkEntry(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0644, ModTime: fixedTime}}
}

func deviceEntry(typ byte, name string, mode int64, major, minor int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: fixedTime}}
}

// with returns a copy of e after applying f to its header.
func (e tarEntry) with(f func(h *tar.Header)) tarEntry {
	f(&e.hdr)
	return e
}

func (e tarEntry) owner(uid, gid int, uname, gname string) tarEntry {
	return e.with(func(h *tar.Header) { h.Uid, h.Gid, h.Uname, h.Gname = uid, gid, uname, gname })
}

func (e tarEntry) mtime(t time.Time) tarEntry {
	return e.with(func(h *tar.Header) { h.ModTime = t })
}

func (e tarEntry) xattr(key, value string) tarEntry {
	return e.with(func(h *tar.Header) {
		recs := make(map[string]string, len(h.PAXRecords)+1)
		for k, v := range h.PAXRecords {
			recs[k] = v
		}
		recs["SCHILY.xattr."+key] = value
		h.PAXRecords = recs
	})
}

// content returns n deterministic bytes for seed: runs of incompressible random
// bytes alternating with runs of low-entropy text, so deflate has real work on both.
func content(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([]byte, n)
	const alphabet = "abcdefghij klmnop\n"
	for i := 0; i < n; {
		run := 1 + rng.IntN(8192)
		random := rng.IntN(2) == 0
		for j := 0; j < run && i < n; j, i = j+1, i+1 {
			if random {
				out[i] = byte(rng.Uint32())
			} else {
				out[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
	}
	return out
}

// text returns n deterministic alphanumeric bytes for seed.
func text(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, n)
	for i := range out {
		out[i] = alnum[rng.IntN(len(alnum))]
	}
	return out
}
