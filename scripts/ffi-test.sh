#!/usr/bin/env bash
# Tests of the C library: installs libestargz with cargo-c into the staging
# tree target/libestargz-stage (shared with scripts/go-test.sh), checks that
# the committed include/estargz.h equals the freshly generated header, then
# compiles the C tests and the README example against the installed tree
# through pkg-config and runs them built with ASan+UBSan, and again under
# valgrind.
#
#   scripts/ffi-test.sh                  # what CI runs (via scripts/test.sh)
#   scripts/ffi-test.sh --update-header  # regenerate include/estargz.h
#
# Needs: cargo-c 0.10.24 (cargo cinstall), gcc, pkg-config, valgrind, GNU
# tar, gzip, sha256sum; setfattr (attr) to cover extended attributes.
# The last line is "ffi tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

update_header=0
[ "${1:-}" = --update-header ] && update_header=1

work=$(mktemp -d "${TMPDIR:-/tmp}/estargz-ffi.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# 1. Build and install (cdylib with soname, staticlib, header, estargz.pc);
#    this also points pkg-config and LD_LIBRARY_PATH at the staging tree.
# shellcheck source=scripts/lib/libestargz.sh
source scripts/lib/libestargz.sh
install_libestargz
lib=$LIBESTARGZ_LIB
header=$LIBESTARGZ_HEADER

# 2. The committed header is what cbindgen generates now.
if [ "$update_header" = 1 ]; then
  cp "$header" include/estargz.h
  echo "updated include/estargz.h"
  exit 0
fi
if diff -u include/estargz.h "$header"; then
  pass "header: include/estargz.h is up to date"
else
  fail "header: include/estargz.h differs from the generated header (run scripts/ffi-test.sh --update-header)"
fi

# The README quotes the example program verbatim.
if awk '/^<!-- estargz-ffi\/examples\/convert_cat.c -->$/ {m = 1; next}
        m == 1 && /^```c$/ {m = 2; next}
        m == 2 && /^```$/ {exit}
        m == 2 {print}' README.md | diff -u estargz-ffi/examples/convert_cat.c -; then
  pass "readme: the C example equals estargz-ffi/examples/convert_cat.c"
else
  fail "readme: the C example differs from estargz-ffi/examples/convert_cat.c"
fi

# 3. Compile against the installed tree, found through pkg-config.
pc_cflags=$(pkg-config --cflags estargz)
pc_libs=$(pkg-config --libs estargz)
echo "pkg-config --cflags --libs estargz: $pc_cflags $pc_libs"
common=(-std=c11 -O1 -g -Wall -Wextra -Werror -pthread)
sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
build() { # OUT SRC [FLAGS...]
  local out=$1 src=$2
  shift 2
  # shellcheck disable=SC2086 # pkg-config output is a list of flags
  gcc "${common[@]}" "$@" "$src" $pc_cflags $pc_libs -o "$work/$out"
}
build test_api_asan estargz-ffi/tests/c/test_api.c "${sanitize[@]}"
build test_api estargz-ffi/tests/c/test_api.c
build convert_cat_asan estargz-ffi/examples/convert_cat.c "${sanitize[@]}"
# The static library links too (with its Libs.private).
# shellcheck disable=SC2046
gcc "${common[@]}" estargz-ffi/examples/convert_cat.c $pc_cflags \
  "$lib/libestargz.a" $(pkg-config --static --libs-only-l estargz | sed 's/-lestargz//') \
  -o "$work/convert_cat_static"

# The dynamic library comes from the staging tree, not from a system install.
ldd "$work/test_api" >"$work/ldd.out"
if grep -qF "$lib/libestargz.so" "$work/ldd.out"; then
  pass "link: test_api uses $lib/libestargz.so"
else
  fail "link: test_api does not use the staging tree's library"
  cat "$work/ldd.out"
fi

# 4. Fixture: a small tree with every entry kind the tests look at, as tar
#    and tar.gz.
fixture() { # DIR
  local fx=$1
  mkdir -p "$fx/tree/dir/sub"
  (
    cd "$fx/tree"
    printf 'hello, world\n' >hello.txt
    chmod 0754 hello.txt
    seq 1 200000 >dir/big.txt # ~1.3 MB: twenty 64 KiB chunks
    : >empty
    ln -s hello.txt link
    ln hello.txt dir/hard
    mkfifo dir/fifo
    if command -v setfattr >/dev/null && setfattr -n user.test -v value hello.txt 2>/dev/null; then
      touch "$fx/has_xattr"
    fi
  )
  # Whole seconds: tar stores sub-second times in PAX records, which the
  # builder rounds like the Go reference, while stat's st_mtime truncates.
  find "$fx/tree" -exec touch -h -d @1600000000 {} +
  # Sorted, so dir/hard is stored as the file and hello.txt as the hard link.
  tar --sort=name --xattrs --xattrs-include='user.*' -C "$fx/tree" -cf "$fx/input.tar" .
  gzip -c "$fx/input.tar" >"$fx/input.tar.gz"
  sha256sum "$fx/input.tar" >"$fx/input.tar.sha256"
}

# Runs a test binary; counts its PASS/FAIL lines, and a non-zero exit
# without FAIL lines (a sanitizer or valgrind report) as one failure.
run_tests() { # LABEL CMD...
  local label=$1 out status
  shift
  out=$work/$label.out
  set +e
  "$@" >"$out"
  status=$?
  set -e
  sed "s/^/[$label] /" "$out"
  local p f
  p=$(grep -c '^PASS ' "$out" || true)
  f=$(grep -c '^FAIL ' "$out" || true)
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$status" != 0 ] && [ "$f" = 0 ]; then
    fail "$label: exit status $status"
  fi
}

# 5. The C tests with ASan (leak detection on) + UBSan.
fixture "$work/fx-asan"
ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1 \
  run_tests asan "$work/test_api_asan" "$work/fx-asan"

# 6. The same tests, unsanitized, under valgrind (memcheck, full leak check).
fixture "$work/fx-valgrind"
# Leak kinds: definite and indirect only. "Possibly lost" blocks come from
# the runtime, not from the library's handles: glibc's per-thread DTV of
# exited threads and std's thread handle for C-created threads that called
# into Rust (both seen with this test; ASan's LeakSanitizer reports none).
run_tests valgrind valgrind -q --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
  "$work/test_api" "$work/fx-valgrind"

# 7. The README example (convert + cat), dynamic with ASan and static.
for variant in convert_cat_asan convert_cat_static; do
  if "$work/$variant" "$work/fx-asan/input.tar" "$work/$variant.esgz" dir/big.txt \
    >"$work/$variant.out" && cmp -s "$work/$variant.out" "$work/fx-asan/tree/dir/big.txt"; then
    pass "example: $variant prints dir/big.txt"
  else
    fail "example: $variant"
  fi
done

echo "ffi tests: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
