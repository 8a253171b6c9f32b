package main

// Comparing an expected listing with one built from a reader.

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
)

// comparison is the outcome of compareListings.
type comparison struct {
	diffs []string // mismatches: any makes the check fail
	infos []string // tolerated differences (directories the reader synthesised)
}

// compareListings requires every expected entry to be present and equal in got;
// extra entries in got are tolerated only when they are directories.
func compareListings(expected []Entry, got map[string]Entry) comparison {
	var c comparison
	seen := make(map[string]bool, len(expected))
	for _, want := range expected {
		seen[want.Name] = true
		have, ok := got[want.Name]
		if !ok {
			c.diffs = append(c.diffs, fmt.Sprintf("missing %q (want %s)", want.Name, want.Type))
			continue
		}
		for _, d := range fieldDiffs(want, have) {
			c.diffs = append(c.diffs, fmt.Sprintf("%q: %s", want.Name, d))
		}
	}
	var extra []string
	for name := range got {
		if !seen[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		e := got[name]
		if e.Type == "dir" {
			c.infos = append(c.infos, fmt.Sprintf("extra dir %q (mode %04o) not in expected listing", name, e.Mode))
		} else {
			c.diffs = append(c.diffs, fmt.Sprintf("unexpected %q (%s)", name, e.Type))
		}
	}
	return c
}

// fieldDiffs lists "field: want X, got Y" for every differing field.
func fieldDiffs(want, have Entry) []string {
	var out []string
	wv, hv := reflect.ValueOf(want), reflect.ValueOf(have)
	t := wv.Type()
	for i := 0; i < t.NumField(); i++ {
		w, h := wv.Field(i).Interface(), hv.Field(i).Interface()
		if xw, ok := w.(map[string]string); ok {
			// nil and empty maps are the same listing value.
			if len(xw) == 0 && len(h.(map[string]string)) == 0 {
				continue
			}
		}
		if !reflect.DeepEqual(w, h) {
			out = append(out, fmt.Sprintf("%s: want %s, got %s", t.Field(i).Tag.Get("json"), jsonText(w), jsonText(h)))
		}
	}
	return out
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// report prints the comparison (at most maxShown diffs) and returns whether it passed.
func (c comparison) report(total int) bool {
	const maxShown = 20
	for _, s := range c.infos {
		fmt.Println("info:", s)
	}
	if len(c.diffs) == 0 {
		fmt.Printf("check: %d entries ok\n", total)
		return true
	}
	for i, s := range c.diffs {
		if i == maxShown {
			fmt.Fprintf(os.Stderr, "... and %d more differences\n", len(c.diffs)-maxShown)
			break
		}
		fmt.Fprintln(os.Stderr, "diff:", s)
	}
	fmt.Printf("check: FAILED, %d differences over %d expected entries\n", len(c.diffs), total)
	return false
}
