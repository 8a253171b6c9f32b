package main

// The canonical listing as seen through the upstream reader's tree.

import (
	"fmt"
	"path"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
)

type child struct {
	base string
	ent  *estargz.TOCEntry
}

func sortedChildren(dir *estargz.TOCEntry) []child {
	var out []child
	dir.ForeachChild(func(base string, ent *estargz.TOCEntry) bool {
		out = append(out, child{base, ent})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].base < out[j].base })
	return out
}

// listingFromReader walks the reader's tree from the root, reading and verifying
// every regular file (landmarks included) on the way. The reader resolves a
// hardlink to its target's entry, so a child whose entry is named differently
// from the child's own path is listed as a hardlink to that name.
func listingFromReader(r *estargz.Reader, v estargz.TOCEntryVerifier) (map[string]Entry, []string, error) {
	root, ok := r.Lookup("")
	if !ok {
		return nil, nil, fmt.Errorf("reader has no root entry")
	}
	got := map[string]Entry{}
	var problems []string
	type link struct{ name, target string }
	var links []link

	var walk func(dir string, d *estargz.TOCEntry)
	walk = func(dir string, d *estargz.TOCEntry) {
		for _, c := range sortedChildren(d) {
			p := path.Join(dir, c.base)
			if c.ent.Name != p {
				got[p] = hardlinkListing(p, c.ent.Name)
				links = append(links, link{p, c.ent.Name})
				continue
			}
			if e, ok := r.Lookup(p); !ok || e != c.ent {
				problems = append(problems, fmt.Sprintf("%q: Lookup disagrees with the tree", p))
			}
			e := Entry{
				Name:   p,
				Type:   c.ent.Type,
				Mode:   c.ent.Mode & 07777,
				UID:    c.ent.UID,
				GID:    c.ent.GID,
				Xattrs: encodeXattrs(c.ent.Xattrs),
				MTime:  canonicalMTime(c.ent.ModTime()),
			}
			switch c.ent.Type {
			case "reg":
				var pr []string
				e.Size = c.ent.Size
				e.SHA256, pr = readRegular(r, v, p, c.ent)
				problems = append(problems, pr...)
			case "symlink":
				e.LinkName = c.ent.LinkName
			case "char", "block":
				e.DevMajor, e.DevMinor = int64(c.ent.DevMajor), int64(c.ent.DevMinor)
			case "dir":
				walk(p, c.ent)
			}
			got[p] = e
		}
	}
	walk("", root)

	// Opening a file through a hardlink's own name must reach the target.
	for _, l := range links {
		t, ok := got[l.target]
		if !ok || t.Type != "reg" {
			continue
		}
		sr, err := r.OpenFile(l.name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%q: OpenFile through hardlink: %v", l.name, err))
			continue
		}
		if sr.Size() != t.Size {
			problems = append(problems, fmt.Sprintf("%q: size %d through hardlink, target has %d", l.name, sr.Size(), t.Size))
		}
	}

	for name := range got {
		if excludedName(name) {
			delete(got, name)
		}
	}
	return got, problems, nil
}
