#!/usr/bin/env bash
# FUSE mount benchmark, in one run (root, /dev/fuse): the same tree read
#   - from disk, extracted with tar (native),
#   - through `estargz-fuse mount` of its eStargz blob, with FUSE passthrough,
#   - through the mount with --no-passthrough (every read served by the daemon).
# Workloads: sequential read of one large file (cat) and find + lstat of
# every path (find -printf) over >= 10k files. "cold" = page cache dropped
# and, for the mounts, a fresh mount with an empty chunk cache (the daemon
# decompresses from the blob); "warm" = page cache dropped again, the mount's
# chunk cache kept (the case passthrough is for). Medians of RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] && [ -e /dev/fuse ] || { echo "needs root and /dev/fuse" >&2; exit 1; }
runs=${RUNS:-5}
data=${BENCH_DIR:-$PWD/bench-data}
mkdir -p "$data"
big_src=$data/input.tar
[ -f "$big_src" ] || benches/make-input.sh "$big_src" "${BENCH_MB:-256}"

cargo build --release -q -p estargz-cli -p estargz-fuse
estargz=$PWD/target/release/estargz
fuse=$PWD/target/release/estargz-fuse

work=$(mktemp -d "${TMPDIR:-/var/tmp}/fuse-bench.XXXXXX")
cleanup() {
  for m in "$work"/mnt-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

# The tree: one large file (the system-file tar of make-input.sh, i.e. a mix
# of binaries and text) and 12 000 small files in 120 directories.
tree=$work/tree
mkdir -p "$tree/small"
cp "$big_src" "$tree/big.bin"
python3 - "$tree/small" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
words = [w.encode() for w in "alpha beta gamma delta layer chunk digest overlay".split()]
for d in range(120):
    os.mkdir(f"{root}/d{d:03}")
    for f in range(100):
        body = b" ".join(rng.choice(words) for _ in range(rng.randrange(0, 600)))
        with open(f"{root}/d{d:03}/f{f:03}.txt", "wb") as out:
            out.write(body)
PY
tar -C "$tree" -cf "$work/tree.tar" .
"$estargz" convert "$work/tree.tar" "$work/tree.esgz" >/dev/null
native=$work/native
mkdir -p "$native"
tar -C "$native" -xf "$work/tree.tar"
files=$(find "$native" | wc -l)
big_mb=$(($(stat -c %s "$tree/big.bin") / 1000000))
rm -rf "$tree" "$work/tree.tar"

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# mount NAME [ARGS...]: a fresh mount at $work/mnt-NAME with an empty cache.
mount_layer() {
  local name=$1
  shift
  local mnt=$work/mnt-$name cache=$work/cache-$name
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  rm -rf "$cache"
  mkdir -p "$mnt" "$cache"
  "$fuse" mount --daemon --no-prefetch --cache-dir "$cache" "$@" "$work/tree.esgz" "$mnt"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# measure ROOT WORKLOAD MODE [MOUNT-NAME MOUNT-ARGS...] -> median seconds.
# WORKLOAD: seq | find; MODE: cold | warm.
measure() {
  local root=$1 workload=$2 mode=$3
  shift 3
  local times=() start
  for _ in $(seq "$runs"); do
    if [ $# -gt 0 ] && { [ "$mode" = cold ] || ! mountpoint -q "$root"; }; then
      mount_layer "$@"
    fi
    if [ "$mode" = warm ]; then run_workload "$root" "$workload"; fi
    drop_caches
    start=$(now)
    run_workload "$root" "$workload"
    times+=("$(elapsed "$start")")
  done
  printf '%s\n' "${times[@]}" | median
}
run_workload() {
  case $2 in
    seq) cat "$1/big.bin" >/dev/null ;;
    find) find "$1" -printf '%s %m %U %T@\n' >/dev/null ;;
  esac
}

pt=$work/mnt-pt
dm=$work/mnt-daemon
echo "tree: ${big_mb} MB file + $files paths; median of $runs runs; $(nproc) CPUs"
declare -A t
for w in seq find; do
  for m in cold warm; do
    t[$w-$m-native]=$(measure "$native" "$w" "$m")
    t[$w-$m-pt]=$(measure "$pt" "$w" "$m" pt)
    t[$w-$m-daemon]=$(measure "$dm" "$w" "$m" daemon --no-passthrough)
  done
done

row() {
  local label=$1 key=$2 unit=$3
  local -A shown=([native]="disk (tar -x)" [pt]="mount, passthrough" [daemon]="mount, no passthrough")
  for s in native pt daemon; do
    local v=${t[$key-$s]}
    local rate
    if [ "$unit" = MB ]; then
      rate=$(awk -v v="$v" -v mb="$big_mb" 'BEGIN { printf "%7.0f MB/s", mb / v }')
    else
      rate=$(awk -v v="$v" -v n="$files" 'BEGIN { printf "%7.0f k/s ", n / v / 1000 }')
    fi
    awk -v l="$label" -v s="${shown[$s]}" -v v="$v" -v r="$rate" -v n="${t[$key-native]}" \
      'BEGIN { printf "| %-22s | %-24s | %8.3f | %s | %5.0f%% |\n", l, s, v, r, 100 * n / v }'
  done
}
echo
echo "| workload               | read from                |   sec    |     rate     | of native |"
echo "|------------------------|--------------------------|----------|--------------|-----------|"
for w in seq find; do
  for m in cold warm; do
    label="$([ $w = seq ] && echo "cat ${big_mb} MB file" || echo "find+lstat $files") $m"
    row "$label" "$w-$m" "$([ $w = seq ] && echo MB || echo files)"
  done
done
