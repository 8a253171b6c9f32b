#!/usr/bin/env bash
# Tests of the Go bindings (bindings/go) against the library of this
# checkout: installs libestargz with cargo-c into target/libestargz-stage (a
# staging tree, found through pkg-config and LD_LIBRARY_PATH), then runs
# gofmt, go vet and go test -race.
#
#   scripts/go-test.sh          # what CI runs (via scripts/test.sh)
#   eval "$(scripts/go-test.sh --env)"   # install, then set up this shell
#                                        # for go build/test in bindings/go
#
# Needs: cargo-c 0.10.24, Go, gcc, pkg-config. The Go modules of
# bindings/go (the upstream estargz used as a test oracle) must be
# downloadable or in the module cache (.ci/run runs go mod download).
# The last line is "go tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

# shellcheck source=scripts/lib/libestargz.sh
source scripts/lib/libestargz.sh

if [ "${1:-}" = --env ]; then
  install_libestargz >&2
  printf 'export PKG_CONFIG_PATH=%q PKG_CONFIG_SYSROOT_DIR=%q LD_LIBRARY_PATH=%q\n' \
    "$PKG_CONFIG_PATH" "$PKG_CONFIG_SYSROOT_DIR" "$LD_LIBRARY_PATH"
  exit 0
fi

install_libestargz

cd bindings/go
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt: needs formatting: $unformatted" >&2
  exit 1
fi
go vet ./...

# -count=1: always run against the library just built, never cached results.
out=$CARGO_TARGET_DIR/go-test-output.txt
set +e
go test -race -count=1 -v ./... 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# Top-level tests and examples; subtests are counted in their parent.
passed=$(grep -c '^--- PASS: ' "$out" || true)
failed=$(grep -c '^--- FAIL: ' "$out" || true)
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  failed=1 # a build failure, panic or timeout
fi
echo "go tests: ${passed} passed, ${failed} failed"
[ "$status" = 0 ]
