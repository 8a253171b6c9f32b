module github.com/estargz-rs/estargz-rs/bindings/go

go 1.26
