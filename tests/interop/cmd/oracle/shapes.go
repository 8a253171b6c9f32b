package main

// The catalogue of tar shapes that gen writes out.

import (
	"archive/tar"
	"fmt"
	"strings"
	"time"
)

// shape is one generated case: an input tar plus the options to convert it with.
type shape struct {
	name    string
	entries []tarEntry
	tar     tarOpts
	opts    buildOpts
}

// prefixes are the name spellings exercised; the value is the shape-name suffix.
var prefixes = []struct{ prefix, tag string }{
	{"", "plain"},
	{"./", "dot"},
	{"/", "abs"},
	{"../", "dotdot"},
}

func formatTag(f tar.Format) string {
	switch f {
	case tar.FormatUSTAR:
		return "ustar"
	case tar.FormatPAX:
		return "pax"
	case tar.FormatGNU:
		return "gnu"
	}
	return "auto"
}

// allShapes returns every shape, in a stable order, with unique names.
func allShapes() []shape {
	var s []shape
	add := func(name string, entries []tarEntry, t tarOpts, o buildOpts) {
		s = append(s, shape{name: name, entries: entries, tar: t, opts: o})
	}

	add("empty", nil, tarOpts{}, buildOpts{})
	add("empty-keepdiffid", nil, tarOpts{}, buildOpts{ExternalTOC: true, KeepDiffID: true})

	for _, p := range prefixes {
		add("dirs-"+p.tag, dirsOnly(p.prefix), tarOpts{prefix: p.prefix}, buildOpts{})
		add("xattrs-"+p.tag, filesWithXattrs(), tarOpts{prefix: p.prefix, format: tar.FormatPAX}, buildOpts{})
		add("hardlinks-"+p.tag, hardlinks(), tarOpts{prefix: p.prefix}, buildOpts{})
	}
	add("hardlink-before-target", hardlinkBeforeTarget(), tarOpts{}, buildOpts{})

	for _, f := range []tar.Format{tar.FormatUSTAR, tar.FormatGNU} {
		add("empty-files-"+formatTag(f), emptyAlternating(), tarOpts{format: f}, buildOpts{})
		add("devices-"+formatTag(f), devices(), tarOpts{format: f}, buildOpts{})
		add("modes-"+formatTag(f), modes(), tarOpts{format: f}, buildOpts{})
	}
	add("symlinks-pax", symlinks(), tarOpts{format: tar.FormatPAX}, buildOpts{})
	add("symlinks-gnu-dot", symlinks(), tarOpts{prefix: "./", format: tar.FormatGNU}, buildOpts{})

	add("owners-pax", owners(true), tarOpts{format: tar.FormatPAX}, buildOpts{})
	add("owners-gnu", owners(false), tarOpts{format: tar.FormatGNU}, buildOpts{})

	add("longnames-ustar", longNames(false), tarOpts{format: tar.FormatUSTAR}, buildOpts{})
	add("longnames-pax", longNames(true), tarOpts{format: tar.FormatPAX}, buildOpts{})
	add("longnames-gnu", longNames(true), tarOpts{format: tar.FormatGNU}, buildOpts{})
	add("longnames-pax-dot", longNames(true), tarOpts{prefix: "./", format: tar.FormatPAX}, buildOpts{})

	add("pax-records", paxRecords(), tarOpts{format: tar.FormatPAX}, buildOpts{})
	add("many-files", manyFiles(3000), tarOpts{}, buildOpts{})
	add("big-files", bigFiles(), tarOpts{}, buildOpts{})
	add("chunk4-plain", chunked(), tarOpts{}, buildOpts{ChunkSize: 4})
	add("chunk4-dot", chunked(), tarOpts{prefix: "./"}, buildOpts{ChunkSize: 4})
	add("chunk1024-multiples", chunkMultiples(1024), tarOpts{}, buildOpts{ChunkSize: 1024})

	prio := []string{"foo/baz/deep.txt", "link", "zzz/", "sym"}
	add("prioritized-plain", prioritizedTree(), tarOpts{}, buildOpts{Prioritized: prio})
	add("prioritized-listdot", prioritizedTree(), tarOpts{}, buildOpts{Prioritized: withPrefix("./", prio)})
	add("prioritized-tardot-listabs", prioritizedTree(), tarOpts{prefix: "./"}, buildOpts{Prioritized: withPrefix("/", prio)})
	add("prioritized-missing", prioritizedTree(), tarOpts{prefix: "/"},
		buildOpts{Prioritized: []string{"../other.txt", "does/not/exist", "implicit/file.txt", "link"}})

	add("minchunk-8000", severalFilesInChunk(), tarOpts{}, buildOpts{MinChunkSize: 8000})
	add("minchunk-8000-dot", severalFilesInChunk(), tarOpts{prefix: "./"}, buildOpts{MinChunkSize: 8000})
	add("minchunk-8000-chunk32000", severalFilesInChunkChunked(), tarOpts{}, buildOpts{MinChunkSize: 8000, ChunkSize: 32000})

	add("externaltoc-mixed", mixed(true), tarOpts{format: tar.FormatPAX}, buildOpts{ExternalTOC: true})
	add("externaltoc-chunk4", chunked(), tarOpts{}, buildOpts{ExternalTOC: true, ChunkSize: 4})
	add("externaltoc-prioritized", prioritizedTree(), tarOpts{}, buildOpts{ExternalTOC: true, Prioritized: prio})

	lossless := buildOpts{ExternalTOC: true, KeepDiffID: true}
	add("keepdiffid-mixed", mixed(true), tarOpts{format: tar.FormatPAX}, lossless)
	add("keepdiffid-chunk4", chunked(), tarOpts{}, buildOpts{ExternalTOC: true, KeepDiffID: true, ChunkSize: 4})
	add("keepdiffid-minchunk", severalFilesInChunkChunked(), tarOpts{},
		buildOpts{ExternalTOC: true, KeepDiffID: true, MinChunkSize: 8000, ChunkSize: 32000})
	add("keepdiffid-longnames-gnu", longNames(true), tarOpts{format: tar.FormatGNU}, lossless)
	add("keepdiffid-pax-records", paxRecords(), tarOpts{format: tar.FormatPAX}, lossless)
	add("keepdiffid-devices-gnu", devices(), tarOpts{format: tar.FormatGNU}, lossless)
	add("keepdiffid-duplicates", duplicates(), tarOpts{}, lossless)

	add("whiteouts", whiteouts(), tarOpts{}, buildOpts{})
	add("duplicates", duplicates(), tarOpts{}, buildOpts{})
	add("lossy-toc-and-landmarks", lossy(), tarOpts{}, buildOpts{})

	add("mixed-ustar", mixed(false), tarOpts{format: tar.FormatUSTAR}, buildOpts{})
	add("mixed-pax", mixed(true), tarOpts{format: tar.FormatPAX}, buildOpts{})
	add("mixed-gnu", mixed(false), tarOpts{format: tar.FormatGNU}, buildOpts{})
	add("mixed-level1-dot", mixed(true), tarOpts{prefix: "./"}, buildOpts{Level: 1})

	seen := map[string]bool{}
	for _, sh := range s {
		if seen[sh.name] {
			panic("duplicate shape name " + sh.name)
		}
		seen[sh.name] = true
	}
	return s
}

func withPrefix(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// Shape contents. Names are given without prefix; writeTar adds it.

func dirsOnly(prefix string) []tarEntry {
	var e []tarEntry
	if prefix == "./" || prefix == "/" {
		e = append(e, dirEntry("", 0700)) // explicit root entry ("./" or "/")
	}
	return append(e,
		dirEntry("a/", 0755),
		dirEntry("a/b/", 0750),
		dirEntry("a/b/c/", 0755).owner(10, 20, "ten", "twenty"),
		dirEntry("z/", 0700).mtime(unixEpoch),
		dirEntry("m/", 0711).mtime(zeroTime),
		dirEntry("implicit/child/", 0755), // "implicit" itself has no entry
	)
}

func filesWithXattrs() []tarEntry {
	capability := "\x01\x00\x00\x02\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	return []tarEntry{
		dirEntry("foo/", 0755).xattr("user.dir", "d"),
		fileEntry("foo/bar.txt", 0644, []byte("Some contents")).
			xattr("foo", "bar").xattr("invalid-utf8", "\xff\xfe\xfd"),
		fileEntry("foo/cap", 0755, content(11, 5000)).xattr("security.capability", capability),
		fileEntry("foo/opaque", 0600, nil).xattr("trusted.overlay.opaque", "y").xattr("user.a.b.c", "v=1\n2"),
		fileEntry("plain", 0644, []byte("no xattrs here")),
	}
}

func emptyAlternating() []tarEntry {
	e := []tarEntry{dirEntry("d/", 0755)}
	for i, size := range []int{1, 511, 512, 513, 1024, 4095, 0} {
		e = append(e,
			fileEntry(fmt.Sprintf("d/empty%d", i), 0644, nil),
			fileEntry(fmt.Sprintf("d/file%d", i), 0644, content(uint64(100+i), size)))
	}
	return e
}

func symlinks() []tarEntry {
	return []tarEntry{
		dirEntry("foo/", 0755),
		symlinkEntry("foo/bar", "../../x"),
		symlinkEntry("abs", "/etc/passwd"),
		symlinkEntry("dot", "."),
		symlinkEntry("foo/self", "bar"),
		symlinkEntry("foo/long", strings.Repeat("t/", 100)+"end"),
		symlinkEntry("dangling", "no/such/file").mtime(unixEpoch),
	}
}

func hardlinks() []tarEntry {
	return []tarEntry{
		dirEntry("foo/", 0755),
		fileEntry("foo/foo1", 0644, []byte("test")),
		hardlinkEntry("foolink", "foo/foo1"),
		dirEntry("sub/", 0755),
		dirEntry("sub/deep/", 0755),
		fileEntry("sub/deep/file", 0600, content(7, 3000)).owner(50, 100, "user", "grp"),
		hardlinkEntry("sub/hl", "sub/deep/file"),
		hardlinkEntry("hl2", "sub/deep/file"),
		fileEntry("empty", 0644, nil),
		hardlinkEntry("sub/emptylink", "empty"),
		hardlinkEntry("chain", "foolink"), // a hardlink to a hardlink
	}
}

func hardlinkBeforeTarget() []tarEntry {
	return []tarEntry{
		hardlinkEntry("early", "later/file"),
		dirEntry("later/", 0755),
		fileEntry("later/file", 0644, []byte("target written after its link")),
	}
}

func devices() []tarEntry {
	return []tarEntry{
		dirEntry("dev/", 0755),
		deviceEntry(tar.TypeChar, "dev/null", 0666, 1, 3),
		deviceEntry(tar.TypeBlock, "dev/sda", 0660, 8, 0),
		deviceEntry(tar.TypeBlock, "dev/nvme", 0660, 259, 65536),
		deviceEntry(tar.TypeChar, "c", 0, 111, 222),
		deviceEntry(tar.TypeBlock, "b", 0, 123, 456),
		deviceEntry(tar.TypeFifo, "f", 0, 0, 0).mtime(zeroTime),
		deviceEntry(tar.TypeFifo, "dev/fifo", 0600, 0, 0),
	}
}

func modes() []tarEntry {
	return []tarEntry{
		dirEntry("foo1/", 0755|02000), // setgid
		fileEntry("foo1/bar1", 0700|04000, []byte("suid")),
		fileEntry("foo1/bar2", 0755|02000, []byte("sgid")),
		dirEntry("foo2/", 0755|01000),
		fileEntry("foo2/bar3", 0755|01000, []byte("sticky")),
		dirEntry("foo3/", 0755),
		fileEntry("foo3/bar4", 0700, []byte("0700")),
		fileEntry("foo3/bar5", 0755, []byte("0755")),
		fileEntry("foo3/all", 07777, []byte("all bits")),
		fileEntry("foo3/none", 0, []byte("no bits")),
		fileEntry("foo3/ifreg", 0100644, []byte("S_IFREG bits in the tar mode")),
		dirEntry("foo4/", 040755), // S_IFDIR bits in the tar mode
	}
}

func owners(pax bool) []tarEntry {
	e := []tarEntry{
		dirEntry("home/", 0755),
		dirEntry("home/u/", 0700).owner(1000, 1000, "alice", "staff"),
		fileEntry("home/u/a", 0644, []byte("a")).owner(1000, 1000, "alice", "staff"),
		fileEntry("home/u/b", 0644, []byte("b")).owner(1000, 1000, "bob", "staff"), // same uid, new name
		fileEntry("home/u/c", 0644, []byte("c")).owner(1000, 1001, "", ""),
		fileEntry("home/big", 0644, []byte("big ids")).owner(3000000, 4000000, "big", "biggrp"),
		fileEntry("home/root", 0644, []byte("r")).owner(0, 0, "root", "root"),
	}
	if pax {
		e = append(e, fileEntry("home/longname", 0644, []byte("l")).
			owner(7, 8, strings.Repeat("u", 40), strings.Repeat("g", 40)))
	}
	return e
}

// longNames has 120- and 150-character paths; with huge it adds a >255-character
// path and long link targets (not representable in USTAR).
func longNames(huge bool) []tarEntry {
	d60 := strings.Repeat("d", 60) + "/"
	d80 := strings.Repeat("e", 80) + "/"
	f120 := d60 + strings.Repeat("f", 120-len(d60))
	f150 := d80 + strings.Repeat("g", 150-len(d80))
	e := []tarEntry{
		dirEntry(d60, 0755),
		dirEntry(d80, 0755),
		fileEntry(f120, 0644, []byte("120")),
		fileEntry(f150, 0644, content(3, 700)),
	}
	if !huge {
		return e
	}
	deep := ""
	for i := 0; i < 5; i++ {
		deep += strings.Repeat(string(rune('p'+i)), 50) + "/"
		e = append(e, dirEntry(deep, 0755))
	}
	f300 := deep + strings.Repeat("h", 300-len(deep))
	return append(e,
		fileEntry(f300, 0644, []byte("300")),
		fileEntry(strings.Repeat("i", 200), 0644, []byte("200-char base name")),
		symlinkEntry("symlong", f300),
		hardlinkEntry("hardlong", f300),
		hardlinkEntry(deep+"hardlong2", f150),
	)
}

func paxRecords() []tarEntry {
	sub := func(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }
	return []tarEntry{
		dirEntry("t/", 0755).mtime(sub(1600000000, 123456789)),
		fileEntry("t/down", 0644, []byte("x.4")).mtime(sub(1600000000, 400000000)),
		fileEntry("t/up", 0644, []byte("x.6")).mtime(sub(1600000000, 600000000)),
		fileEntry("t/half", 0644, []byte("x.5")).mtime(sub(1600000000, 500000000)),
		fileEntry("t/pre1970", 0644, []byte("negative")).mtime(sub(-1000, 0)),
		fileEntry("t/pre1970frac", 0644, []byte("negative .3")).mtime(sub(-1001, 700000000)),
		fileEntry("t/future", 0644, []byte("past octal range")).mtime(sub(10000000000, 0)),
		fileEntry("t/epoch", 0644, []byte("unix 0")).mtime(unixEpoch),
		fileEntry("t/zero", 0644, []byte("zero time")).mtime(zeroTime),
		fileEntry("t/ünïcödé.txt", 0644, []byte("non-ASCII name")),
		fileEntry("t/vendor", 0644, []byte("vendor records")).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{
				"LIBARCHIVE.xattr.user.ignored": "aWdub3JlZA",
				"SCHILY.xattr.user.kept":        "kept",
				"comment":                       "a comment record",
			}
		}),
		symlinkEntry("t/link", "ünï"),
	}
}

func manyFiles(n int) []tarEntry {
	var e []tarEntry
	const dirs = 30
	for d := 0; d < dirs; d++ {
		e = append(e, dirEntry(fmt.Sprintf("dir%02d/", d), 0755))
	}
	for i := 0; i < n; i++ {
		size := int((uint64(i) * 2654435761) % 301)
		e = append(e, fileEntry(fmt.Sprintf("dir%02d/file%04d", i%dirs, i), 0644, content(uint64(1000+i), size)))
	}
	return e
}

func bigFiles() []tarEntry {
	return []tarEntry{
		dirEntry("big/", 0755),
		fileEntry("big/10m.bin", 0644, content(42, 10<<20)),
		fileEntry("big/4m.bin", 0644, content(43, 4<<20)), // exactly one default chunk
		fileEntry("small", 0644, []byte("small file after big ones")),
	}
}

func chunked() []tarEntry {
	return []tarEntry{
		dirEntry("foo/", 0755),
		fileEntry("foo/big.txt", 0644, []byte("This is such a big file")), // 23 bytes
		fileEntry("foo/four", 0644, []byte("abcd")),
		fileEntry("foo/eight", 0644, []byte("abcdefgh")),
		fileEntry("foo/one", 0644, []byte("a")),
		fileEntry("foo/empty", 0644, nil),
	}
}

func chunkMultiples(c int) []tarEntry {
	e := []tarEntry{dirEntry("m/", 0755)}
	for i, size := range []int{c - 1, c, c + 1, 2 * c, 3 * c, 3*c + 1} {
		e = append(e, fileEntry(fmt.Sprintf("m/size%d", size), 0644, content(uint64(200+i), size)))
	}
	return e
}

func prioritizedTree() []tarEntry {
	return []tarEntry{
		dirEntry("foo/", 0755),
		fileEntry("foo/bar.txt", 0644, []byte("bar")),
		dirEntry("foo/baz/", 0755),
		fileEntry("foo/baz/deep.txt", 0644, content(5, 2000)),
		fileEntry("target.txt", 0644, []byte("hardlink target")),
		hardlinkEntry("link", "target.txt"),
		symlinkEntry("sym", "foo/bar.txt"),
		fileEntry("other.txt", 0644, []byte("other")),
		fileEntry("implicit/file.txt", 0644, []byte("parent has no entry")),
		dirEntry("zzz/", 0755),
		fileEntry("zzz/last.txt", 0644, []byte("last")),
	}
}

func severalFilesInChunk() []tarEntry {
	big := text(64, 64000)
	return []tarEntry{
		dirEntry("foo/", 0755),
		fileEntry("foo/foo1", 0644, big),
		fileEntry("foo2", 0644, []byte("bb")),
		fileEntry("foo22", 0644, []byte("ccc")),
		dirEntry("bar/", 0755),
		fileEntry("bar/bar.txt", 0644, []byte("aaa")),
		fileEntry("foo3", 0644, big),
	}
}

func severalFilesInChunkChunked() []tarEntry {
	big := text(64, 64000)
	return []tarEntry{
		dirEntry("foo/", 0755),
		fileEntry("foo/foo1", 0644, big),
		fileEntry("foo2", 0644, []byte("bb")),
		dirEntry("bar/", 0755),
		fileEntry("foo3", 0644, big),
	}
}

func whiteouts() []tarEntry {
	return []tarEntry{
		dirEntry("dir/", 0755),
		fileEntry("dir/.wh..wh..opq", 0, nil),
		fileEntry(".wh.foo", 0, nil),
		fileEntry("dir/.wh.gone", 0, nil),
		fileEntry("dir/keep", 0644, []byte("kept")),
	}
}

func duplicates() []tarEntry {
	return []tarEntry{
		fileEntry("a.txt", 0644, []byte("first")),
		dirEntry("d/", 0755),
		fileEntry("d/x", 0644, []byte("x1")),
		fileEntry("b", 0644, []byte("b1")),
		fileEntry("a.txt", 0600, []byte("second, later wins")),
		dirEntry("./d/", 0700),
		symlinkEntry("d/x", "elsewhere"),
		hardlinkEntry("b", "a.txt"),
	}
}

func lossy() []tarEntry {
	return []tarEntry{
		dirEntry("bar/", 0755),
		dirEntry("foo/", 0755),
		fileEntry("foo/bar.txt", 0644, []byte("bar")),
		fileEntry("stargz.index.json", 0644, []byte("dummy")),
		fileEntry(".prefetch.landmark", 0, []byte{0x0f}),
		fileEntry("./.no.prefetch.landmark", 0, []byte{0x0f}),
		dirEntry("sub/", 0755),
		fileEntry("sub/stargz.index.json", 0644, []byte("not the TOC: kept")),
	}
}

// mixed has one of everything; xattrs only when the format can carry them.
func mixed(xattrs bool) []tarEntry {
	bar := fileEntry("foo/bar.txt", 0644, content(9, 10000)).owner(1000, 1000, "user", "grp")
	if xattrs {
		bar = bar.xattr("user.foo", "bar\xff")
	}
	return []tarEntry{
		dirEntry("foo/", 0755).owner(0, 0, "root", "root"),
		bar,
		fileEntry("foo/empty", 0644, nil).owner(1000, 1000, "user", "grp"),
		symlinkEntry("foo/sym", "bar.txt"),
		hardlinkEntry("foo/hard", "foo/bar.txt"),
		deviceEntry(tar.TypeChar, "dev/c", 0666, 1, 3),
		deviceEntry(tar.TypeFifo, "dev/<fifo>&", 0600, 0, 0),
		fileEntry("foo/.wh..wh..opq", 0, nil).mtime(zeroTime),
		fileEntry("top", 0755, content(10, 100)).mtime(unixEpoch),
	}
}
