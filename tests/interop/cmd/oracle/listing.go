package main

// The canonical listing: a reader-independent description of a layer's files,
// computed either from a plain tar (expected side) or from an eStargz reader.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// Entry is one element of the canonical listing. Field order is the JSON order.
type Entry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Size     int64             `json:"size"`
	SHA256   string            `json:"sha256"`
	LinkName string            `json:"linkName"`
	DevMajor int64             `json:"devMajor"`
	DevMinor int64             `json:"devMinor"`
	Xattrs   map[string]string `json:"xattrs"`
	MTime    int64             `json:"mtime"`
}

const xattrPrefix = "SCHILY.xattr."

// cleanName normalises a tar/TOC path the way the eStargz reader does.
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// excludedName reports names that never appear in a listing: the root, the
// TOC and the prefetch landmarks.
func excludedName(clean string) bool {
	switch clean {
	case "", "stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark":
		return true
	}
	return false
}

// truncateMTime makes canonicalMTime keep the whole seconds of a time
// (what stat shows) instead of rounding as eStargz writers do; set by
// `listing --truncate-mtime` for formats that keep sub-second times
// (containers/storage's zstd:chunked).
var truncateMTime bool

// canonicalMTime rounds to the nearest second; zero and Unix 0 both mean "none".
func canonicalMTime(t time.Time) int64 {
	if t.IsZero() || t.Unix() == 0 {
		return 0
	}
	if truncateMTime {
		return t.Unix()
	}
	return t.Round(time.Second).Unix()
}

func encodeXattrs(x map[string][]byte) map[string]string {
	out := make(map[string]string, len(x))
	for k, v := range x {
		out[k] = base64.StdEncoding.EncodeToString(v)
	}
	return out
}

func hardlinkListing(name, target string) Entry {
	return Entry{Name: name, Type: "hardlink", LinkName: target, Xattrs: map[string]string{}}
}

// tarTypes maps archive/tar typeflags to listing types.
var tarTypes = map[byte]string{
	tar.TypeReg:     "reg",
	tar.TypeDir:     "dir",
	tar.TypeSymlink: "symlink",
	tar.TypeLink:    "hardlink",
	tar.TypeChar:    "char",
	tar.TypeBlock:   "block",
	tar.TypeFifo:    "fifo",
}

// listingFromTar computes the canonical listing of a plain tar stream.
func listingFromTar(r io.Reader) ([]Entry, error) {
	tr := tar.NewReader(r)
	byName := map[string]Entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return nil, err
		}
		typ, ok := tarTypes[h.Typeflag]
		if !ok {
			return nil, fmt.Errorf("%q: unsupported tar typeflag %q", h.Name, h.Typeflag)
		}
		name := cleanName(h.Name)
		if typ == "hardlink" {
			byName[name] = hardlinkListing(name, cleanName(h.Linkname))
			continue
		}
		e := Entry{
			Name:   name,
			Type:   typ,
			Mode:   h.Mode & 07777,
			UID:    h.Uid,
			GID:    h.Gid,
			Xattrs: map[string]string{},
			MTime:  canonicalMTime(h.ModTime),
		}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, xattrPrefix) {
				e.Xattrs[k[len(xattrPrefix):]] = base64.StdEncoding.EncodeToString([]byte(v))
			}
		}
		switch typ {
		case "reg":
			hash := sha256.New()
			n, err := io.Copy(hash, tr)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", h.Name, err)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(hash.Sum(nil))
		case "symlink":
			e.LinkName = h.Linkname
		case "char", "block":
			e.DevMajor, e.DevMinor = h.Devmajor, h.Devminor
		}
		byName[name] = e
	}
	resolveHardlinkChains(byName)
	return sortedListing(byName), nil
}

// resolveHardlinkChains points every hardlink at the final non-hardlink target,
// as the eStargz reader resolves chains.
func resolveHardlinkChains(byName map[string]Entry) {
	for name, e := range byName {
		if e.Type != "hardlink" {
			continue
		}
		target := e.LinkName
		for hops := 0; hops < 64; hops++ {
			t, ok := byName[target]
			if !ok || t.Type != "hardlink" {
				break
			}
			target = t.LinkName
		}
		e.LinkName = target
		byName[name] = e
	}
}

// sortedListing drops excluded names and sorts by name.
func sortedListing(byName map[string]Entry) []Entry {
	out := make([]Entry, 0, len(byName))
	for name, e := range byName {
		if !excludedName(name) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// marshalListing renders a listing as 2-space indented JSON with a trailing newline.
func marshalListing(l []Entry) ([]byte, error) {
	if l == nil {
		l = []Entry{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(l); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
