//go:build !go1.25

package estargz_test

// See fstest_symlinks_test.go.
const fstestFollowsDirSymlinks = false
