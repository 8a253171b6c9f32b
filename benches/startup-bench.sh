#!/usr/bin/env bash
# Container start-up benchmark in the style of upstream's hello-bench, with
# Podman and containerd (root, /dev/fuse). A Debian bookworm + python3 image built here
# (benches/startup/build-image.sh; two layers), its gzip original and its
# eStargz conversion (`estargz convert-image`) in a local docker-registry,
# reached through the fault proxy at 20 ms per round trip and 100 Mbit/s.
#
# Modes (MODES, default all):
#   full      plain Podman pulling the gzip image (no layer store)
#   ours      Podman + `estargz-fuse store` as Additional Layer Store
#   upstream  Podman + upstream stargz-store v0.15.1 (benches/stargz-store,
#             our driver over upstream's `store` package, built once)
#   ours-opt / upstream-opt
#             the same stores on the workload-optimized image: per
#             workload, `estargz optimize` of the eStargz image running
#             that workload's command (built once per run, before the
#             samples; tag opt-WORKLOAD)
#   ctr-full      containerd 1.6: `ctr images pull` of the gzip image,
#                 overlayfs snapshotter
#   ctr-ours      containerd + estargz-snapshotter (bindings/go/snapshotter,
#                 built static) + `ctr-remote images rpull`
#   ctr-upstream  containerd + upstream containerd-stargz-grpc v0.15.1
#                 (benches/stargz-grpc, our driver over upstream's `service`
#                 package, built once) + `ctr-remote images rpull`
#   (the containerd modes: benches/startup/containerd.sh)
# Workloads (WORKLOADS, default all):
#   hello     python3 -c 'print("hello")'
#   import    python3 importing 15 stdlib modules
#   readall   cat every file of the image inside the container
#   save      readall, then `podman save` of the image (save columns;
#             Podman modes only)
# Per sample: empty Podman storage, a fresh store process with an empty
# cache, page cache dropped; the phases are `podman pull`, `podman create`,
# `podman start -a` (containerd: a fresh containerd and snapshotter, then
# `ctr images pull|rpull`, `ctr containers create`, `ctr tasks start`). SAMPLES (default 5) samples per mode x workload,
# SAMPLE_TIMEOUT seconds (default 900) per sample. Prints medians and
# writes every sample and the medians as TSV under RESULTS_DIR.
#
# OURS_FLAGS / UPSTREAM_FLAGS: extra flags for each store (e.g.
# OURS_FLAGS=--no-prefetch; UPSTREAM_FLAGS also goes to the upstream
# snapshotter); OURS_SNAPSHOTTER_CONFIG: extra TOML lines for
# estargz-snapshotter (e.g. "prefetch = false"). WORK_DIR (default /var/tmp/estargz-startup-bench)
# keeps the image and the upstream binary between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
[ "$(id -u)" = 0 ] && [ -e /dev/fuse ] || { echo "needs root and /dev/fuse" >&2; exit 1; }

samples=${SAMPLES:-5}
modes=${MODES:-full ours upstream ctr-full ctr-ours ctr-upstream}
workloads=${WORKLOADS:-hello import readall save}
sample_timeout=${SAMPLE_TIMEOUT:-900}
latency_ms=${LATENCY_MS:-20}
rate_mbit=${RATE_MBIT:-100}
work=${WORK_DIR:-/var/tmp/estargz-startup-bench}
results_dir=${RESULTS_DIR:-$work/results}
OURS_FLAGS=${OURS_FLAGS:-}
UPSTREAM_FLAGS=${UPSTREAM_FLAGS:-}
OURS_SNAPSHOTTER_CONFIG=${OURS_SNAPSHOTTER_CONFIG:-}
tools=(runc docker-registry skopeo go python3 curl)
for m in $modes; do
  case $m in
    full | ours | upstream | ours-opt | upstream-opt) tools+=(podman) ;;
    ctr-full | ctr-ours | ctr-upstream) tools+=(containerd ctr-remote) ;;
    *) echo "unknown mode $m (full ours upstream ours-opt upstream-opt ctr-full ctr-ours ctr-upstream)" >&2; exit 2 ;;
  esac
done
for w in $workloads; do
  case $w in hello | import | readall | save) ;; *) echo "unknown workload $w (hello import readall save)" >&2; exit 2 ;; esac
done
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see .ci/run)" >&2; exit 1; }
done

run=$work/run
mkdir -p "$work/bin" "$results_dir"
# shellcheck source=startup/lib.sh
. benches/startup/lib.sh
# shellcheck source=startup/containerd.sh
. benches/startup/containerd.sh

# --- clean up whatever a killed earlier run left, then on every exit ---
umount_under "$run"
rm -rf "$run"
mkdir -p "$run/logs"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries ---
log "building estargz, estargz-fuse and faultproxy (cargo --release)"
cargo build --release -q -p estargz-cli -p estargz-fuse -p estargz-tests \
  --bin estargz --bin estargz-fuse --bin faultproxy
estargz=$repo/target/release/estargz
fuse=$repo/target/release/estargz-fuse
faultproxy=$repo/target/release/faultproxy
upstream_bin=
if [[ " $modes " == *" upstream "* || " $modes " == *" upstream-opt "* ]]; then
  upstream_bin=$(build_go_driver stargz-store)
fi
if [[ " $modes " == *" ctr-upstream "* ]]; then
  upstream_grpc=$(build_go_driver stargz-grpc)
fi
if [[ " $modes " == *" ctr-ours "* ]]; then
  our_snapshotter=$(build_our_snapshotter)
fi

# --- image, registry, proxy ---
benches/startup/build-image.sh "$work/image"
start_registry
log "pushing the gzip image and converting it to eStargz"
skopeo copy -q --dest-tls-verify=false "oci:$work/image/oci:org" "docker://$registry/bench/python:org"
"$estargz" convert-image -q --plain-http "$registry/bench/python:org" "$registry/bench/python:esgz" >/dev/null
if [[ " $modes " == *"-opt "* ]]; then
  for w in $workloads; do build_optimized "$w"; done
fi
start_proxy
org_ref=$proxy/bench/python:org
esgz_ref=$proxy/bench/python:esgz
write_podman_config

commit=$(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo "+dirty")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=$results_dir/startup-$stamp.tsv
summary=$results_dir/startup-$stamp.summary.tsv
{
  echo "# startup-bench $stamp commit $commit samples $samples timeout ${sample_timeout}s link ${latency_ms}ms ${rate_mbit}Mbit/s stats $stats_source ours_flags '$OURS_FLAGS' upstream_flags '$UPSTREAM_FLAGS' ours_snapshotter_config '$OURS_SNAPSHOTTER_CONFIG'"
  echo -e "$RAW_COLUMNS"
} >"$raw"
log "image: gzip $(image_mb org) MB, eStargz $(image_mb esgz) MB compressed; $(nproc) CPUs; commit $commit"
log "link: ${latency_ms} ms per round trip, ${rate_mbit} Mbit/s; counters from the $stats_source"

for w in $workloads; do
  for i in $(seq "$samples"); do
    for m in $modes; do
      case $m in
        ctr-*) [ "$w" = save ] && continue
          sample_ctr "$m" "$w" "$i" >>"$raw" ;;
        *) sample "$m" "$w" "$i" >>"$raw" ;;
      esac
      tail -1 "$raw" | show_sample
    done
  done
done

summarise "$raw" >"$summary"
echo
echo "Median of $samples sample(s); commit $commit; $(date -u '+%Y-%m-%d %H:%M UTC'); counters from the $stats_source"
print_table "$summary"
echo
echo "samples: $raw"
echo "medians: $summary"
