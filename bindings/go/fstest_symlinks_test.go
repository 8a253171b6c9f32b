//go:build go1.25

package estargz_test

// fstest.TestFS handles symlinks to directories from Go 1.25 on (through
// fs.ReadLinkFS); before, it reads them as files and fails.
const fstestFollowsDirSymlinks = true
