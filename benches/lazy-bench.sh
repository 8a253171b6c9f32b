#!/usr/bin/env bash
# Lazy pull benchmark, in one run: a >= 200 MB eStargz layer in a local
# docker-registry, reached through the fault proxy shaped to 20 ms latency
# per request and 100 Mbit/s. Compares, as medians over RUNS runs (default 3):
#   - estargz pull --cat of one small file (lazy: footer + TOC + its chunk)
#   - estargz pull --cat of a working set of 20 files (one multi-range fetch)
#   - full download + extract with standard tools (curl | tar -xzf)
# and prints time ratios and bytes fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
data=${BENCH_DIR:-$PWD/bench-data}
mkdir -p "$data"
input=${1:-$data/input.tar}
[ -f "$input" ] || benches/make-input.sh "$input" "${BENCH_MB:-256}"

cargo build --release -q -p estargz-cli -p estargz-tests --bin estargz --bin faultproxy
estargz=$PWD/target/release/estargz
[ -f "$data/lazy.esgz" ] || "$estargz" convert "$input" "$data/lazy.esgz" >/dev/null

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
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
"$estargz" push --plain-http "127.0.0.1:$port/bench/layer:v1" "$data/lazy.esgz" >/dev/null
target/release/faultproxy "127.0.0.1:$port" --latency-ms 20 --rate-mbit 100 >"$work/proxy.addr" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/proxy.addr" ] && break; sleep 0.1; done
proxy=$(cat "$work/proxy.addr")
ref="$proxy/bench/layer:v1"
blob_size=$(stat -c %s "$data/lazy.esgz")
digest=$(sha256sum "$data/lazy.esgz" | cut -d' ' -f1)

# A small file, and 20 files spread over the layer.
"$estargz" ls -l "$data/lazy.esgz" | awk '$1 ~ /^-/ && $3 > 0 && $3 < 65536 && $NF !~ /landmark/ { print $NF }' >"$work/small.txt"
one=$(sed -n '1p' "$work/small.txt")
total_small=$(wc -l <"$work/small.txt")
set_args=()
while read -r f; do set_args+=(--cat "$f"); done < <(awk -v n="$total_small" 'NR % int(n / 20 + 1) == 0' "$work/small.txt" | head -20)

time_median() {
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>"$work/last.err"
    end=$(date +%s.%N)
    times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
fetched() { sed -n 's/.*fetched \([0-9]*\) of.*/\1/p' "$work/last.err" | head -1; }

lazy_one() { "$estargz" pull --plain-http "$ref" --no-prefetch --cat "$one"; }
lazy_set() { "$estargz" pull --plain-http "$ref" --no-prefetch "${set_args[@]}"; }
full() {
  rm -rf "$work/x"; mkdir -p "$work/x"
  curl -sf "http://$proxy/v2/bench/layer/blobs/sha256:$digest" | tar -xzf - -C "$work/x"
}

echo "layer: $((blob_size / 1000000)) MB compressed; proxy: 20 ms/request, 100 Mbit/s; median of $runs runs"
t_one=$(time_median lazy_one); b_one=$(fetched)
t_set=$(time_median lazy_set); b_set=$(fetched)
t_full=$(time_median full)
row() { awk -v n="$1" -v t="$2" -v b="$3" -v size="$blob_size" -v full="$t_full" \
  'BEGIN { printf "| %-40s | %7.2f | %6.1fx | %11d | %6.2f%% |\n", n, t, full / t, b, 100 * b / size }'; }
echo
echo "| read through the shaped link              |   sec   | faster | bytes fetched | of blob |"
echo "|-------------------------------------------|---------|--------|---------------|---------|"
row "estargz pull --cat (1 small file)" "$t_one" "$b_one"
row "estargz pull --cat (20-file working set)" "$t_set" "$b_set"
row "curl | tar -xzf (full download + extract)" "$t_full" "$blob_size"
