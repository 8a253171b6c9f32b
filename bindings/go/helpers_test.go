package estargz_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// file is one tar entry of a test fixture.
type file struct {
	name string
	typ  byte // tar.TypeReg etc.; 0 means regular
	body string
	link string
	mode int64
	// xattrs become SCHILY.xattr PAX records.
	xattrs map[string]string
}

func reg(name, body string) file { return file{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) file       { return file{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) file {
	return file{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) file {
	return file{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

var mtime = time.Unix(1600000000, 0)

func makeTar(t testing.TB, files []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{
			Name: f.name, Typeflag: typ, Mode: f.mode, Linkname: f.link, ModTime: mtime,
			Uid: 1000, Gid: 1000, Uname: "user", Gname: "group", Format: tar.FormatPAX,
		}
		for k, v := range f.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, f.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// randomText is deterministic, compressible-but-not-trivially content.
func randomText(seed int64, n int) string {
	rng := rand.New(rand.NewSource(seed))
	words := []string{"lorem", "ipsum", "dolor", "sit", "amet", "estargz", "chunk", "toc", "\n"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[rng.Intn(len(words))])
		sb.WriteByte(' ')
		if rng.Intn(50) == 0 {
			fmt.Fprintf(&sb, "%x", rng.Int63())
		}
	}
	return sb.String()[:n]
}

// fixture is a tree with every kind the tests look at; big.txt spans
// several chunks at the chunk sizes used below.
func fixture() []file {
	return []file{
		dir("etc/"),
		reg("etc/os-release", "NAME=estargz-test\nID=test\n"),
		reg("etc/hostname", "box\n"),
		dir("usr/"),
		dir("usr/bin/"),
		reg("usr/bin/app", randomText(1, 100_000)),
		reg("usr/bin/tool", randomText(2, 3_000)),
		dir("data/"),
		reg("data/big.txt", randomText(3, 700_000)),
		reg("data/empty", ""),
		symlink("data/link", "big.txt"),
		symlink("data/abs", "/etc/hostname"),
		symlink("bin", "usr/bin"),
		hardlink("data/hard", "etc/os-release"),
	}
}

// smallFixture is fixture() with less data (big.txt still spans chunks of
// 32 KiB).
func smallFixture() []file {
	files := fixture()
	for i, f := range files {
		if len(f.body) > 50_000 {
			files[i].body = f.body[:50_000+i*1000]
		}
	}
	return files
}

// contents maps each regular file (and hard link) to its bytes.
func contents(files []file) map[string]string {
	m := map[string]string{}
	for _, f := range files {
		if f.typ == tar.TypeReg || f.typ == 0 {
			m[f.name] = f.body
		}
	}
	for _, f := range files {
		if f.typ == tar.TypeLink {
			m[f.name] = m[f.link]
		}
	}
	return m
}

// buildBlob builds files with opts and returns the blob bytes and the Blob
// (already closed; its metadata stays readable).
func buildBlob(t testing.TB, files []file, opts ...estargz.Option) ([]byte, *estargz.Blob) {
	t.Helper()
	blob, err := estargz.Build(bytes.NewReader(makeTar(t, files)), opts...)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	data, err := io.ReadAll(blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := blob.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != blob.CompressedSize() {
		t.Fatalf("blob has %d bytes, CompressedSize says %d", len(data), blob.CompressedSize())
	}
	return data, blob
}

func openBytes(t testing.TB, data []byte, opts ...estargz.OpenOption) *estargz.Reader {
	t.Helper()
	r, err := estargz.Open(bytes.NewReader(data), int64(len(data)), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func readFile(t testing.TB, r *estargz.Reader, name string) string {
	t.Helper()
	sr, err := r.OpenFile(name)
	if err != nil {
		t.Fatalf("OpenFile(%q): %v", name, err)
	}
	b, err := io.ReadAll(sr)
	if err != nil {
		t.Fatalf("reading %q: %v", name, err)
	}
	return string(b)
}

// checkContents reads every file of want through r.
func checkContents(t testing.TB, r *estargz.Reader, want map[string]string) {
	t.Helper()
	for name, body := range want {
		if got := readFile(t, r, name); got != body {
			t.Errorf("%s: got %d bytes, want %d (content differs)", name, len(got), len(body))
		}
	}
}
