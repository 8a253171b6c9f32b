#!/usr/bin/env bash
# Short fuzzing smoke run of estargz-core (cargo-fuzz / libFuzzer).
#
# For each target in fuzz/fuzz_targets: replays the saved reproducers in
# fuzz/artifacts-found/<target>/ (regressions), then fuzzes for FUZZ_SECONDS
# starting from freshly generated seeds (valid tars and blobs made with
# estargz_core::build). Exits non-zero on any crash, timeout or OOM.
#
#   FUZZ_SECONDS=30     seconds of fuzzing per target
#   FUZZ_TARGETS="..."  targets to run (default: all three)
#   FUZZ_TOOLCHAIN=...  rustup toolchain to use (default: nightly if installed,
#                       else the default toolchain, e.g. stable)
#   FUZZ_SANITIZER=...  address | none (default: address on nightly, none on
#                       stable, where -Zsanitizer is not accepted)
#
# Toolchain: cargo-fuzz passes only stable rustc flags (-Cpasses=sancov-module,
# -Cllvm-args=...) except for the sanitizer (-Zsanitizer=...), so stable works
# with `--sanitizer none`. Nightly is preferred when installed: AddressSanitizer
# also checks the C and unsafe code underneath (libdeflate, zlib-rs). Without
# it the targets run 3-10x faster; single huge allocations are caught either
# way (the harness's allocator aborts over MAX_ALLOCATION, see fuzz/src/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-footer_toc open_read tar_build}
start=$SECONDS

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ] && command -v rustup >/dev/null &&
  rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
  toolchain=nightly
fi
cargo=(cargo)
rustc=(rustc)
if [ -n "$toolchain" ]; then
  cargo+=("+$toolchain")
  rustc+=("+$toolchain")
fi
if [ -z "${FUZZ_SANITIZER:-}" ]; then
  if "${rustc[@]}" --version | grep -q nightly; then
    FUZZ_SANITIZER=address
  else
    FUZZ_SANITIZER=none
  fi
fi
fuzz=("${cargo[@]}" fuzz)
flags=(--sanitizer "$FUZZ_SANITIZER")
echo "fuzz: $("${rustc[@]}" --version), cargo-fuzz $CARGO_FUZZ_VERSION, sanitizer $FUZZ_SANITIZER, ${seconds}s per target"

logs=fuzz/target/smoke-logs
mkdir -p "$logs"
# One cargo invocation builds every target (and the seed writer within them).
"${fuzz[@]}" build "${flags[@]}"

# Seeds: every target's init writes the whole seed corpus when asked to.
ESTARGZ_FUZZ_SEEDS="$PWD/fuzz/corpus" "${fuzz[@]}" run "${flags[@]}" open_read -- -runs=0 \
  >"$logs/seeds.log" 2>&1 || {
  cat "$logs/seeds.log"
  echo "fuzz: generating seeds failed"
  exit 1
}

# Lines worth showing from a libFuzzer log on failure.
explain() {
  { grep -E -m1 -A1 "panicked at" "$1" || true
    grep -E -m1 "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)" "$1" || true
    grep -E "Test unit written to" "$1" || true; } | sed 's/^/  /'
}

triple=$("${rustc[@]}" -vV | sed -n 's/^host: //p')
bin=fuzz/target/$triple/release
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

passed=0
failed=0
for target in $targets; do
  ok=1
  # Saved reproducers of fixed bugs must keep passing (raw files, one run each).
  replayed=0
  bad=0
  for input in fuzz/artifacts-found/"$target"/*; do
    [ -f "$input" ] || continue
    replayed=$((replayed + 1))
    log=$logs/replay-$target-$(basename "$input").log
    if ! "$bin/$target" -rss_limit_mb=2048 -timeout=10 "$input" >"$log" 2>&1; then
      bad=$((bad + 1))
      echo "fuzz: $target: saved reproducer $input fails (log: $log):"
      explain "$log"
    fi
  done
  if [ "$bad" != 0 ]; then
    ok=0
  elif [ "$replayed" != 0 ]; then
    echo "fuzz: $target: $replayed saved reproducer(s) pass"
  fi
  extra=()
  if [ "$target" != tar_build ]; then
    extra+=("-dict=$PWD/fuzz/dicts/toc.dict")
  fi
  if "${fuzz[@]}" run "${flags[@]}" "$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${extra[@]}" \
    >"$logs/$target.log" 2>&1; then
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$logs/$target.log" | grep -Eo '[0-9]+$' || echo "?")
    echo "fuzz: $target: ok, $runs runs in ${seconds}s"
  else
    echo "fuzz: $target: FAILED (log: $logs/$target.log)"
    explain "$logs/$target.log"
    echo "  reproduce: cargo ${toolchain:+"+$toolchain "}fuzz run ${flags[*]} $target <file above>"
    ok=0
  fi
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

echo "fuzz: took $((SECONDS - start))s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
