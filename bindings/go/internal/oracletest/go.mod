module github.com/estargz-rs/estargz-rs/bindings/go/internal/oracletest

// The reference (and its dependencies) need Go 1.24; the bindings
// themselves declare less (../../go.mod).
go 1.24.0

require (
	github.com/containerd/stargz-snapshotter/estargz v0.18.2
	github.com/estargz-rs/estargz-rs/bindings/go v0.0.0
	github.com/opencontainers/go-digest v1.0.0
)

require (
	github.com/klauspost/compress v1.18.3 // indirect
	github.com/vbatts/tar-split v0.12.2 // indirect
	golang.org/x/sync v0.19.0 // indirect
)

replace github.com/estargz-rs/estargz-rs/bindings/go => ../..
