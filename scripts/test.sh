#!/usr/bin/env bash
# Runs every test of the project: formatting and lint gates, the Rust unit and
# integration tests (including the Go-reference interop tests, which build the
# Go oracle under tests/interop), go vet, the C library tests (cargo-c install,
# header check, C programs with ASan/UBSan and valgrind), the Go bindings'
# tests (go vet + go test -race against the library built here), the
# containerd snapshotter end to end (scripts/containerd-test.sh), and a short
# fuzzing smoke run.
# Needs: Rust (cargo; rustup with the declared MSRV's toolchain), Go, GNU
# tar, gzip, cargo-c 0.10.24, gcc, pkg-config, valgrind, and Debian's
# docker-registry and skopeo (.ci/run installs them all). Run as root for the ownership and device-node checks of the
# end-to-end tests (they are skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings

step "core without default features; core docs (warnings denied)"
cargo check -p estargz-core --no-default-features
RUSTDOCFLAGS="-D warnings" cargo doc -p estargz-core --no-deps

step "core with the declared MSRV (workspace rust-version)"
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  echo "installing Rust $msrv (minimal profile) for the MSRV check"
  rustup toolchain install "$msrv" --profile minimal
fi
# A target dir of its own: another compiler would rebuild the main one.
CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check -p estargz-core --locked

step "go vet (tests/interop)"
(cd tests/interop && go vet ./... && test -z "$(gofmt -l .)")
(cd tests/interop/cstorage && go vet -tags exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper ./... && test -z "$(gofmt -l .)")

step "cargo test"
cargo test --workspace --release 2>&1 | tee target/test-output.txt
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' target/test-output.txt | awk '{s += $4} END {print s + 0}')

step "ffi (cargo-c + C tests)"
./scripts/ffi-test.sh 2>&1 | tee target/ffi-output.txt
ffi_passed=$(grep -Eo '^ffi tests: [0-9]+ passed' target/ffi-output.txt | awk '{print $3}')
passed=$((passed + ffi_passed))

step "go bindings (go vet + go test -race)"
./scripts/go-test.sh 2>&1 | tee target/go-output.txt
go_passed=$(grep -Eo '^go tests: [0-9]+ passed' target/go-output.txt | awk '{print $3}')
passed=$((passed + go_passed))

step "containerd snapshotter (containerd + ctr-remote)"
./scripts/containerd-test.sh 2>&1 | tee target/containerd-output.txt
ctrd_passed=$(grep -Eo '^containerd tests: [0-9]+ passed' target/containerd-output.txt | awk '{print $3}')
passed=$((passed + ctrd_passed))

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz smoke (${FUZZ_SECONDS:-30}s per target)"
  ./scripts/fuzz-smoke.sh
fi

step "summary"
echo "all tests: ${passed} passed, 0 failed"
