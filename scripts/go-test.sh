#!/usr/bin/env bash
# Tests of the Go bindings (bindings/go) against the library of this
# checkout: installs libestargz with cargo-c into target/libestargz-stage (a
# staging tree, found through pkg-config and LD_LIBRARY_PATH), then runs
# gofmt, go vet and go test -race over the bindings, the oracle module
# (internal/oracletest) and the containerd snapshotter (snapshotter); the tests again with the oldest Go that go.mod
# declares; and a test binary built with -tags estargz_static, checked to
# need no libestargz.so and run without LD_LIBRARY_PATH.
#
#   scripts/go-test.sh          # what CI runs (via scripts/test.sh)
#   eval "$(scripts/go-test.sh --env)"   # install, then set up this shell
#                                        # for go build/test in bindings/go
#
# Needs: cargo-c 0.10.24, Go, gcc, pkg-config, readelf. The Go modules of
# bindings/go/internal/oracletest (the upstream estargz used as a test
# oracle) and the Go toolchain named by bindings/go/go.mod must be
# downloadable or in the module cache (.ci/run downloads them).
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
go -C internal/oracletest vet ./...
go -C snapshotter vet ./...

work=$(mktemp -d "${TMPDIR:-/tmp}/estargz-go.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=$CARGO_TARGET_DIR/go-test-output.txt
: >"$out"
status=0
run() { # CMD... : appends its output to $out; a failure fails the script
  echo "+ $*" | tee -a "$out"
  set +e
  "$@" 2>&1 | tee -a "$out"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    status=1
  fi
}

# -count=1: always run against the library just built, never cached results.
run go test -race -count=1 -v ./...
run go -C internal/oracletest test -race -count=1 -v ./...
# The containerd snapshotter (its own module; mounts only in its e2e test).
run go -C snapshotter test -race -count=1 -v ./...

# The oldest Go the module declares builds and passes the tests too (the
# toolchain is fetched through the module proxy, or found in the cache).
min_go=go$(awk '$1 == "go" {print $2}' go.mod)
run env GOTOOLCHAIN="$min_go" go vet ./...
run env GOTOOLCHAIN="$min_go" go test -count=1 -v ./...

# Static linking: no libestargz.so needed at run time. The header and
# archive come from the staging tree through CGO_CFLAGS / CGO_LDFLAGS (the
# estargz_static build does not use pkg-config).
static_test=$work/estargz-static.test
CGO_CFLAGS="$(pkg-config --cflags estargz)" CGO_LDFLAGS="$(pkg-config --libs-only-L estargz)" \
  run go test -tags estargz_static -c -o "$static_test" .
if [ -x "$static_test" ]; then
  if readelf -d "$static_test" | grep -q 'NEEDED.*libestargz'; then
    echo "--- FAIL: static: $static_test needs libestargz.so" | tee -a "$out"
    readelf -d "$static_test" | grep NEEDED
    status=1
  else
    echo "--- PASS: static: the estargz_static test binary needs no libestargz.so" | tee -a "$out"
  fi
  run env -u LD_LIBRARY_PATH "$static_test" -test.count=1 -test.v \
    -test.run '^(TestVersion|TestRoundTrip|TestEntries|TestReadDirLongStrings|TestConcurrentReads)$'
fi

# Top-level tests and examples; subtests are counted in their parent.
passed=$(grep -c '^--- PASS: ' "$out" || true)
failed=$(grep -c '^--- FAIL: ' "$out" || true)
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  failed=1 # a build failure, panic or timeout
fi
echo "go tests: ${passed} passed, ${failed} failed"
[ "$status" = 0 ]
