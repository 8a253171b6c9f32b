#!/usr/bin/env bash
# zstd:chunked benchmark (issue 17), in one run on one real tar (default
# `tar -C /usr/lib -cf in.tar python3.11`):
#   - build time (median of RUNS, default 3) and blob size of our eStargz
#     (level 9), zstd:chunked v2 and v1 next to the Go references
#     (upstream eStargz level 9, upstream zstdchunked, containers/storage);
#   - lazy first file for the blobs WE built: each pushed to a local
#     docker-registry, then `estargz pull --cat FILE` (no disk cache): wall
#     time (median), bytes fetched and requests from pull's report; the
#     output is checked against the file in the tar on every run.
# Prints the load average before and after, since the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
data=${BENCH_DIR:-$PWD/bench-data/zstd}
file=${BENCH_FILE:-python3.11/os.py}
mkdir -p "$data"
input=${1:-$data/in.tar}
[ -f "$input" ] || tar -C /usr/lib -cf "$input" python3.11

cargo build --release -q -p estargz-cli --bin estargz
estargz=$PWD/target/release/estargz
(cd tests/interop && go build -o "$data/oracle" ./cmd/oracle)
(cd tests/interop/cstorage && go build -tags exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper -o "$data/cstorage" .)

work=$(mktemp -d)
pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_median() {
  local times=() start end
  for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    "$@" >"$work/last.out" 2>"$work/last.err"
    end=$(date +%s.%N)
    times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')")
  done
  printf '%s\n' "${times[@]}" | median
}

echo "input: $input ($(stat -c %s "$input") bytes); median of $runs runs"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| builder | seconds | blob bytes |"
echo "|---|---|---|"
build_row() {
  local name=$1 out=$2
  shift 2
  local t
  t=$(time_median "$@")
  printf '| %s | %s | %s |\n' "$name" "$t" "$(stat -c %s "$out")"
}
build_row "ours, eStargz level 9" "$data/ours.esgz" \
  "$estargz" convert --threads 2 "$input" "$data/ours.esgz"
build_row "ours, zstd:chunked v2 (level 10)" "$data/ours-v2.zst" \
  "$estargz" convert --threads 2 --format zstd:chunked "$input" "$data/ours-v2.zst"
build_row "ours, zstd:chunked v1 (level 10)" "$data/ours-v1.zst" \
  "$estargz" convert --threads 2 --format zstd:chunked-v1 "$input" "$data/ours-v1.zst"
build_row "Go eStargz v0.18.2, level 9" "$data/go.esgz" \
  "$data/oracle" build --parallelism 2 "$input" "$data/go.esgz"
build_row "Go zstdchunked (v1, SpeedDefault)" "$data/go-v1.zst" \
  "$data/oracle" zstdchunked "$input" "$data/go-v1.zst"
build_row "containers/storage v1.55.1 (v2, level 10)" "$data/cs-v2.zst" \
  "$data/cstorage" build "$input" "$data/cs-v2.zst"

# Lazy first file through a local registry (loopback, no shaping).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$port}
YAML
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
want=$(tar -xOf "$input" "$file" | sha256sum | cut -d' ' -f1)

echo
echo "lazy: estargz pull --plain-http REF --cat $file"
echo
echo "| format (built by us) | seconds | bytes fetched | of blob | requests |"
echo "|---|---|---|---|---|"
lazy_row() {
  local name=$1 blob=$2 repo=$3
  "$estargz" push --plain-http "127.0.0.1:$port/$repo:v1" "$blob" >/dev/null
  local ref="127.0.0.1:$port/$repo:v1" times=() start end
  for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    "$estargz" pull --plain-http "$ref" --cat "$file" >"$work/cat.out" 2>"$work/cat.err"
    end=$(date +%s.%N)
    times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')")
    [ "$(sha256sum <"$work/cat.out" | cut -d' ' -f1)" = "$want" ] || {
      echo "$name: wrong bytes for $file" >&2
      exit 1
    }
  done
  local bytes reqs size
  bytes=$(sed -n 's/.*fetched \([0-9]*\) of.*/\1/p' "$work/cat.err" | head -1)
  reqs=$(sed -n 's/.* in \([0-9]*\) request.*/\1/p' "$work/cat.err" | head -1)
  size=$(stat -c %s "$blob")
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$(printf '%s\n' "${times[@]}" | median)" \
    "$bytes" "$(awk -v b="$bytes" -v s="$size" 'BEGIN { printf "%.1f%%", 100 * b / s }')" "$reqs"
}
lazy_row "eStargz" "$data/ours.esgz" bench/esgz
lazy_row "zstd:chunked v2" "$data/ours-v2.zst" bench/v2
lazy_row "zstd:chunked v1" "$data/ours-v1.zst" bench/v1
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
