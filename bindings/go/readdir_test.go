package estargz_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestReadDirLongStrings: paths, link targets and xattr values longer than
// the bindings' first buffers come back whole, in ReadDir and Lookup.
func TestReadDirLongStrings(t *testing.T) {
	deep := strings.Repeat(strings.Repeat("d", 200)+"/", 12) // 2,412 bytes
	target := strings.Repeat("t", 3000)
	f := reg(deep+"f", "x")
	f.Xattrs = map[string]string{"user." + strings.Repeat("n", 300): strings.Repeat("v", 5000)}
	files := []file{f, symlink(deep+"link", target), reg(deep+"g", "y")}
	data, _ := buildBlob(t, files)
	r := openBytes(t, data)
	list, err := r.ReadDir(deep)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Path != deep+"f" || list[1].Path != deep+"g" || list[2].Path != deep+"link" || list[2].Name != "link" {
		t.Fatalf("ReadDir: %d entries", len(list))
	}
	if list[2].LinkName != target {
		t.Errorf("link target: %d bytes, want %d", len(list[2].LinkName), len(target))
	}
	for k, v := range f.Xattrs {
		if string(list[0].Xattrs[k]) != v || len(list[0].Xattrs) != 1 {
			t.Errorf("xattrs: %d, value %d bytes", len(list[0].Xattrs), len(list[0].Xattrs[k]))
		}
	}
	e, err := r.Lookup(deep + "link")
	if err != nil || e.Path != deep+"link" || e.LinkName != target || e.UserName != "user" || e.GroupName != "group" {
		t.Errorf("Lookup: %v", err)
	}
}

// BenchmarkReadDir lists a directory of 10,000 files and reports the cgo
// calls and the time per entry.
func BenchmarkReadDir(b *testing.B) {
	const n = 10_000
	files := []file{dir("d/")}
	for i := 0; i < n; i++ {
		files = append(files, reg(fmt.Sprintf("d/file-%05d", i), ""))
	}
	data, _ := buildBlob(b, files)
	r := openBytes(b, data)
	b.ResetTimer()
	calls := runtime.NumCgoCall()
	for i := 0; i < b.N; i++ {
		list, err := r.ReadDir("d")
		if err != nil || len(list) != n {
			b.Fatalf("ReadDir: %d entries, %v", len(list), err)
		}
	}
	b.StopTimer()
	entries := float64(b.N) * n
	b.ReportMetric(float64(runtime.NumCgoCall()-calls)/entries, "cgocalls/entry")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/entries, "ns/entry")
}
