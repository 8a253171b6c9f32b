#!/usr/bin/env bash
# Side-by-side build and extract benchmark, in one run:
#   build:   estargz convert (level 9)  vs  Go reference estargz.Build (level 9)  vs  gzip -9
#   extract: estargz extract (verified) vs  tar -xzf (of the gzip -9 file)
# Prints medians over RUNS runs (default 3) and ratios. Input: a >= 200 MB tar
# of real system files (benches/make-input.sh), or the tar given as $1.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
data=${BENCH_DIR:-$PWD/bench-data}
mkdir -p "$data"
input=${1:-$data/input.tar}
[ -f "$input" ] || benches/make-input.sh "$input" "${BENCH_MB:-256}"

cargo build --release -q -p estargz-cli
estargz=$PWD/target/release/estargz
oracle=$data/oracle
(cd tests/interop && go build -o "$oracle" ./cmd/oracle)

size=$(stat -c %s "$input")
mb=$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')

# median of the wall-clock seconds of running "$@" $runs times
time_median() {
  local times=()
  for _ in $(seq "$runs"); do
    sync
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

clean_extract() { rm -rf "$data/x"; mkdir -p "$data/x"; }
ours_extract() { clean_extract; "$estargz" extract "$data/ours.esgz" "$data/x"; }
tar_extract() { clean_extract; tar -xzf "$data/input.tar.gz" -C "$data/x"; }

echo "input: $input ($mb MB), $(nproc) CPUs, median of $runs runs"
t_ours=$(time_median "$estargz" convert --compression-level 9 "$input" "$data/ours.esgz")
t_ours1=$(time_median "$estargz" convert --compression-level 9 --threads 1 "$input" "$data/ours1.esgz")
t_go=$(time_median "$oracle" build --level 9 "$input" "$data/go.esgz")
t_gzip=$(time_median sh -c "gzip -9 -c '$input' > '$data/input.tar.gz'")
t_xours=$(time_median ours_extract)
t_xtar=$(time_median tar_extract)
rm -rf "$data/x"

row() { # name seconds output-file
  awk -v n="$1" -v t="$2" -v mb="$mb" -v out="$(stat -c %s "$3")" -v insz="$size" -v go="$t_go" \
    'BEGIN { printf "| %-34s | %7.2f | %7.1f | %6.3f | %5.2fx |\n", n, t, mb / t, out / insz, go / t }'
}
echo
echo "| build (level 9)                    |  sec   |  MB/s   | ratio  | vs Go |"
echo "|------------------------------------|--------|---------|--------|-------|"
row "estargz convert ($(nproc) threads)" "$t_ours" "$data/ours.esgz"
row "estargz convert (1 thread)" "$t_ours1" "$data/ours1.esgz"
row "Go estargz.Build (reference)" "$t_go" "$data/go.esgz"
row "gzip -9 (single stream)" "$t_gzip" "$data/input.tar.gz"
echo
echo "| extract                            |  sec   |  MB/s   | vs tar |"
echo "|------------------------------------|--------|---------|--------|"
awk -v t="$t_xours" -v r="$t_xtar" -v mb="$mb" 'BEGIN { printf "| %-34s | %6.2f | %7.1f | %5.2fx |\n", "estargz extract (verified)", t, mb / t, r / t }'
awk -v t="$t_xtar" -v mb="$mb" 'BEGIN { printf "| %-34s | %6.2f | %7.1f | %5.2fx |\n", "tar -xzf (gzip -9 file)", t, mb / t, 1 }'
