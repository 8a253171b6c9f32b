package estargz_test

import "github.com/estargz-rs/estargz-rs/bindings/go/internal/testkit"

// The fixtures live in internal/testkit, shared with the oracle module
// (internal/oracletest); these are their short names in this package.
type file = testkit.File

var (
	reg           = testkit.Reg
	dir           = testkit.Dir
	symlink       = testkit.Symlink
	hardlink      = testkit.Hardlink
	mtime         = testkit.ModTime
	makeTar       = testkit.MakeTar
	randomText    = testkit.RandomText
	fixture       = testkit.Fixture
	smallFixture  = testkit.SmallFixture
	contents      = testkit.Contents
	buildBlob     = testkit.BuildBlob
	openBytes     = testkit.OpenBytes
	readFile      = testkit.ReadFile
	checkContents = testkit.CheckContents
)
