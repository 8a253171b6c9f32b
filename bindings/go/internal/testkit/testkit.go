// Package testkit holds the fixtures of the bindings' tests: tar trees
// with every entry kind, blobs built from them, and read-back checks. It is
// shared by the package's own tests and by the oracle module
// (internal/oracletest), which cannot see _test.go files.
package testkit

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

// File is one tar entry of a test fixture.
type File struct {
	// Path is the entry's path in the layer.
	Path string
	Type byte // tar.TypeReg etc.; 0 means regular
	Body string
	Link string
	Mode int64
	// Xattrs become SCHILY.xattr PAX records.
	Xattrs map[string]string
}

// Reg, Dir, Symlink and Hardlink make entries owned by user:group
// (1000:1000).
func Reg(name, body string) File { return File{Path: name, Type: tar.TypeReg, Body: body, Mode: 0o644} }
func Dir(name string) File       { return File{Path: name, Type: tar.TypeDir, Mode: 0o755} }
func Symlink(name, target string) File {
	return File{Path: name, Type: tar.TypeSymlink, Link: target, Mode: 0o777}
}
func Hardlink(name, target string) File {
	return File{Path: name, Type: tar.TypeLink, Link: target, Mode: 0o644}
}

// ModTime is every entry's modification time.
var ModTime = time.Unix(1600000000, 0)

// MakeTar writes files as a PAX tar.
func MakeTar(t testing.TB, files []File) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{
			Name: f.Path, Typeflag: typ, Mode: f.Mode, Linkname: f.Link, ModTime: ModTime,
			Uid: 1000, Gid: 1000, Uname: "user", Gname: "group", Format: tar.FormatPAX,
		}
		for k, v := range f.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// RandomText is deterministic, compressible-but-not-trivially content.
func RandomText(seed int64, n int) string {
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

// Fixture is a tree with every kind the tests look at; big.txt spans
// several chunks at the chunk sizes used below.
func Fixture() []File {
	return []File{
		Dir("etc/"),
		Reg("etc/os-release", "NAME=estargz-test\nID=test\n"),
		Reg("etc/hostname", "box\n"),
		Dir("usr/"),
		Dir("usr/bin/"),
		Reg("usr/bin/app", RandomText(1, 100_000)),
		Reg("usr/bin/tool", RandomText(2, 3_000)),
		Dir("data/"),
		Reg("data/big.txt", RandomText(3, 700_000)),
		Reg("data/empty", ""),
		Symlink("data/link", "big.txt"),
		Symlink("data/abs", "/etc/hostname"),
		Symlink("bin", "usr/bin"),
		Hardlink("data/hard", "etc/os-release"),
	}
}

// SmallFixture is Fixture() with less data (big.txt still spans chunks of
// 32 KiB).
func SmallFixture() []File {
	files := Fixture()
	for i, f := range files {
		if len(f.Body) > 50_000 {
			files[i].Body = f.Body[:50_000+i*1000]
		}
	}
	return files
}

// Contents maps each regular file (and hard link) to its bytes.
func Contents(files []File) map[string]string {
	m := map[string]string{}
	for _, f := range files {
		if f.Type == tar.TypeReg || f.Type == 0 {
			m[f.Path] = f.Body
		}
	}
	for _, f := range files {
		if f.Type == tar.TypeLink {
			m[f.Path] = m[f.Link]
		}
	}
	return m
}

// BuildBlob builds files with opts and returns the blob bytes and the Blob
// (already closed; its metadata stays readable).
func BuildBlob(t testing.TB, files []File, opts ...estargz.Option) ([]byte, *estargz.Blob) {
	t.Helper()
	blob, err := estargz.Build(bytes.NewReader(MakeTar(t, files)), opts...)
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

// OpenBytes opens a blob held in memory, closed when the test ends.
func OpenBytes(t testing.TB, data []byte, opts ...estargz.OpenOption) *estargz.Reader {
	t.Helper()
	r, err := estargz.Open(bytes.NewReader(data), int64(len(data)), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// ReadFile reads the file at name through r.
func ReadFile(t testing.TB, r *estargz.Reader, name string) string {
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

// CheckContents reads every file of want through r.
func CheckContents(t testing.TB, r *estargz.Reader, want map[string]string) {
	t.Helper()
	for name, body := range want {
		if got := ReadFile(t, r, name); got != body {
			t.Errorf("%s: got %d bytes, want %d (content differs)", name, len(got), len(body))
		}
	}
}
