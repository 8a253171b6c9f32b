package estargz

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// FS returns the blob's tree as an fs.FS (also fs.StatFS, fs.ReadDirFS,
// fs.ReadFileFS, and fs.ReadLinkFS of Go 1.25). Open and Stat follow
// symlinks inside the tree, with absolute targets taken relative to its
// root, as in a container's root file system; Lstat and ReadLink do not.
// Hard links read as regular files. Devices and fifos open as empty files.
func (r *Reader) FS() fs.FS { return readerFS{r} }

type readerFS struct{ r *Reader }

// maxSymlinks bounds symlink hops in one resolution, as Linux's ELOOP does.
const maxSymlinks = 40

var errLoop = errors.New("too many levels of symbolic links")

// resolve finds the entry of name, following symlinks in every directory
// component, and in the last one if follow.
func (f readerFS) resolve(op, name string, follow bool) (*Entry, error) {
	fail := func(err error) (*Entry, error) {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	if !fs.ValidPath(name) {
		return fail(fs.ErrInvalid)
	}
	root, err := f.r.Lookup("")
	if err != nil {
		return fail(err)
	}
	var todo []string
	if name != "." {
		todo = strings.Split(name, "/")
	}
	e, cur, hops := root, "", 0
	for len(todo) > 0 {
		if !e.Mode.IsDir() {
			return fail(errNotDir)
		}
		next := path.Join(cur, todo[0])
		todo = todo[1:]
		if e, err = f.r.Lookup(next); err != nil {
			return fail(err)
		}
		if e.Type != TypeSymlink || (len(todo) == 0 && !follow) {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinks {
			return fail(errLoop)
		}
		target := e.LinkName
		if !strings.HasPrefix(target, "/") {
			target = path.Join(cur, target)
		}
		// Cleaning under "/" keeps ".." from climbing above the root, and
		// leaves no "." or ".." components.
		target = strings.TrimPrefix(path.Clean("/"+target), "/")
		var comps []string
		if target != "" {
			comps = strings.Split(target, "/")
		}
		todo = append(comps, todo...)
		e, cur = root, ""
	}
	return e, nil
}

var errNotDir = errors.New("not a directory")

func (f readerFS) Open(name string) (fs.File, error) {
	e, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	info := fileInfo{name: path.Base(name), e: e}
	if e.Mode.IsDir() {
		return &dirFile{fsys: f, path: name, info: info}, nil
	}
	if e.IsRegular() {
		sr, err := f.r.OpenFile(e.Path)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &regFile{sr: sr, info: info, path: name}, nil
	}
	return &regFile{sr: io.NewSectionReader(emptyReaderAt{}, 0, 0), info: info, path: name}, nil
}

func (f readerFS) Stat(name string) (fs.FileInfo, error) {
	e, err := f.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: path.Base(name), e: e}, nil
}

func (f readerFS) Lstat(name string) (fs.FileInfo, error) {
	e, err := f.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: path.Base(name), e: e}, nil
}

func (f readerFS) ReadLink(name string) (string, error) {
	e, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if e.Type != TypeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return e.LinkName, nil
}

func (f readerFS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := f.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !e.Mode.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	list, err := f.r.readDirID(e.id)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(list))
	for i, c := range list {
		out[i] = fs.FileInfoToDirEntry(fileInfo{name: c.Name, e: c})
	}
	return out, nil
}

func (f readerFS) ReadFile(name string) ([]byte, error) {
	file, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if _, ok := file.(*dirFile); ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errIsDir}
	}
	return io.ReadAll(file)
}

var errIsDir = errors.New("is a directory")

type fileInfo struct {
	name string
	e    *Entry
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.e.Size }
func (i fileInfo) Mode() fs.FileMode  { return i.e.Mode }
func (i fileInfo) ModTime() time.Time { return i.e.ModTime }
func (i fileInfo) IsDir() bool        { return i.e.Mode.IsDir() }

// Sys returns the *Entry.
func (i fileInfo) Sys() any { return i.e }

type emptyReaderAt struct{}

func (emptyReaderAt) ReadAt([]byte, int64) (int, error) { return 0, io.EOF }

type regFile struct {
	sr     *io.SectionReader
	info   fileInfo
	path   string
	closed bool
}

func (f *regFile) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *regFile) Read(b []byte) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.path, Err: fs.ErrClosed}
	}
	return f.sr.Read(b)
}

func (f *regFile) ReadAt(b []byte, off int64) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.path, Err: fs.ErrClosed}
	}
	return f.sr.ReadAt(b, off)
}

func (f *regFile) Seek(off int64, whence int) (int64, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrClosed}
	}
	return f.sr.Seek(off, whence)
}

func (f *regFile) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.path, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

type dirFile struct {
	fsys    readerFS
	path    string
	info    fileInfo
	entries []fs.DirEntry
	listed  bool
	closed  bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.path, Err: errIsDir}
}

func (d *dirFile) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.path, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}

// ReadDir follows fs.ReadDirFile: n > 0 returns at most n entries and
// io.EOF at the end; n <= 0 returns the rest.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: fs.ErrClosed}
	}
	if !d.listed {
		list, err := d.fsys.ReadDir(d.path)
		if err != nil {
			return nil, err
		}
		d.entries, d.listed = list, true
	}
	if n <= 0 {
		rest := d.entries
		d.entries = nil
		return rest, nil
	}
	if len(d.entries) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(d.entries))
	out := d.entries[:n:n]
	d.entries = d.entries[n:]
	return out, nil
}
