package main

import (
	"slices"
	"testing"
)

func TestManagerEnvAddsHeapTunablesUnlessSet(t *testing.T) {
	got := managerEnv([]string{"PATH=/bin", "MALLOC_ARENA_MAX=4"})
	want := []string{"PATH=/bin", "MALLOC_ARENA_MAX=4", "MALLOC_MMAP_THRESHOLD_=131072"}
	if !slices.Equal(got, want) {
		t.Fatalf("managerEnv = %q, want %q", got, want)
	}
}
