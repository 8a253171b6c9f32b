module github.com/estargz-rs/estargz-rs/bindings/go

// The oldest Go of a containerd release still supported (2.0 LTS,
// go.mod "go 1.23.0"); scripts/go-test.sh builds and tests with it. The
// oracle tests need newer Go and are a module of their own
// (internal/oracletest).
go 1.23.0
