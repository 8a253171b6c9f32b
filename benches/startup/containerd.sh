# containerd modes of benches/startup-bench.sh (sourced after lib.sh; uses
# its variables and timed/stats_now/phase_status/container_* helpers):
#   ctr-full      `ctr images pull` of the gzip image, overlayfs snapshotter
#   ctr-ours      estargz-snapshotter + `ctr-remote images rpull`
#   ctr-upstream  upstream containerd-stargz-grpc v0.15.1 (benches/stargz-grpc,
#                 our driver over upstream's `service` package) + rpull
# Per sample: a fresh containerd (own root, state, socket; CRI plugin off)
# and a fresh snapshotter with an empty root, page cache dropped; phases
# `images pull|rpull`, `containers create --net-host`, `tasks start`.

ctr_dir=$run/containerd
snap_dir=$run/snapshotter
ctrd_pid=
snap_pid=
ctr=(ctr-remote)

# The proxy-plugin name each lazy mode is registered under.
ctr_snapshotter() { case $1 in ctr-ours) echo estargz ;; ctr-upstream) echo stargz ;; *) echo overlayfs ;; esac; }

# estargz-snapshotter of this checkout, linked statically against the
# libestargz that cargo-c builds here (as scripts/containerd-test.sh does,
# but static, so the FUSE manager it re-executes needs no library path).
build_our_snapshotter() {
  # shellcheck source=../../scripts/lib/libestargz.sh
  . "$repo/scripts/lib/libestargz.sh"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
  log "building libestargz (cargo cinstall) and estargz-snapshotter (go build, static)"
  (cd "$repo" && install_libestargz >/dev/null 2>&1) || die "cargo cinstall of libestargz failed"
  local lib=$CARGO_TARGET_DIR/libestargz-stage/usr/local/lib
  (cd "$repo/bindings/go/snapshotter" &&
    CGO_CFLAGS="-I$CARGO_TARGET_DIR/libestargz-stage/usr/local/include" CGO_LDFLAGS="-L$lib" \
      nice go build -tags estargz_static -trimpath -o "$work/bin/estargz-snapshotter.tmp" ./cmd/estargz-snapshotter) >&2
  mv "$work/bin/estargz-snapshotter.tmp" "$work/bin/estargz-snapshotter"
  echo "$work/bin/estargz-snapshotter"
}

# start_snapshotter MODE LOG: a fresh snapshotter with an empty root,
# serving on $snap_dir/snap.sock.
start_snapshotter() {
  local mode=$1 slog=$2 sock=$snap_dir/snap.sock
  snap_pid=
  [ "$mode" = ctr-full ] && return
  rm -rf --one-file-system "$snap_dir"
  mkdir -p "$snap_dir"
  if [ "$mode" = ctr-ours ]; then
    # Defaults (prefetch, background fetch, passthrough, FUSE manager on)
    # plus the bench registry over plain HTTP.
    printf 'insecure_registries = ["%s"]\n%s\n' "$proxy" "$OURS_SNAPSHOTTER_CONFIG" >"$snap_dir/config.toml"
    "$our_snapshotter" --address "$sock" --root "$snap_dir/root" --config "$snap_dir/config.toml" >"$slog" 2>&1 &
  else
    # shellcheck disable=SC2086 # UPSTREAM_FLAGS is a list of flags
    "$upstream_grpc" -address "$sock" -root "$snap_dir/root" -plain-http "$proxy" $UPSTREAM_FLAGS >"$slog" 2>&1 &
  fi
  snap_pid=$!
  for _ in $(seq 300); do
    [ -S "$sock" ] && return
    kill -0 "$snap_pid" 2>/dev/null || die "the $mode snapshotter exited: $(tail -5 "$slog")"
    sleep 0.1
  done
  die "the $mode snapshotter did not listen in 30 s: $(tail -5 "$slog")"
}

# Our FUSE manager (it owns the layer mounts), while it runs.
manager_pid() {
  local pid
  pid=$(cat "$snap_dir/root/fuse-manager.pid" 2>/dev/null) || return 0
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Peak RSS (KiB) of the snapshotter, plus its FUSE manager's for ours: the
# two processes together do what upstream's one does.
snapshotter_rss() {
  local total=0 p v
  for p in $snap_pid $(manager_pid); do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || v=
    [ -n "$v" ] || { echo NA; return; }
    echo "peak RSS of $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-60): $v KiB" >>"$errlog"
    total=$((total + v))
  done
  echo "$total"
}

# SIGTERM to the snapshotter, then to our FUSE manager (its SIGTERM
# unmounts every layer; upstream's Close does so itself); SIGKILL after 20 s.
stop_snapshotter() {
  local p mgr
  mgr=$(manager_pid)
  for p in $snap_pid $mgr; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      log "snapshotter process $p ignored SIGTERM for 20 s: killing it"
      kill -KILL "$p" 2>/dev/null
    fi
  done
  [ -n "$snap_pid" ] && wait "$snap_pid" 2>/dev/null
  snap_pid=
  umount_under "$snap_dir"
}

start_containerd() {
  local sock=$ctr_dir/containerd.sock
  rm -rf --one-file-system "$ctr_dir"
  mkdir -p "$ctr_dir"
  cat >"$ctr_dir/config.toml" <<TOML
version = 2
root = "$ctr_dir/root"
state = "$ctr_dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[proxy_plugins]
  [proxy_plugins.estargz]
    type = "snapshot"
    address = "$snap_dir/snap.sock"
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "$snap_dir/snap.sock"
TOML
  containerd --config "$ctr_dir/config.toml" >"$run/logs/containerd.log" 2>&1 &
  ctrd_pid=$!
  ctr=(ctr-remote --address "$sock")
  for _ in $(seq 300); do
    [ -S "$sock" ] && "${ctr[@]}" version >/dev/null 2>&1 && return
    kill -0 "$ctrd_pid" 2>/dev/null || die "containerd exited: $(tail -5 "$run/logs/containerd.log")"
    sleep 0.1
  done
  die "containerd did not start in 30 s: $(tail -5 "$run/logs/containerd.log")"
}

# Removes the container and image (while the snapshotter still serves, so
# it sees its snapshots go), then stops containerd.
stop_containerd() {
  [ -n "$ctrd_pid" ] || return 0
  timeout -k 10 60 "${ctr[@]}" tasks kill -s SIGKILL bench >/dev/null 2>&1 || true
  timeout -k 10 60 "${ctr[@]}" tasks delete bench >/dev/null 2>&1 || true
  timeout -k 10 60 "${ctr[@]}" containers delete bench >/dev/null 2>&1 || true
  timeout -k 10 120 "${ctr[@]}" images rm --sync "$org_ref" "$esgz_ref" >/dev/null 2>&1 || true
  kill -TERM "$ctrd_pid" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$ctrd_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$ctrd_pid" 2>/dev/null || true
  wait "$ctrd_pid" 2>/dev/null || true
  ctrd_pid=
  # runc's shims outlive containerd; the container is gone, so they exit.
  umount_under "$ctr_dir"
}

cleanup_containerd() {
  stop_containerd
  stop_snapshotter
  rm -rf --one-file-system "$ctr_dir" "$snap_dir"
}

# sample_ctr MODE WORKLOAD N: one clean-state sample; prints one TSV row
# (the save columns are NA: save is a Podman workload).
sample_ctr() {
  local mode=$1 w=$2 n=$3 ref=$esgz_ref status= rc pull=NA create=NA start=NA total=NA
  local s0 s1 sample_stats="NA NA NA" rss=NA layers=NA name
  local tag=$mode-$w-$n out=$run/logs/$mode-$w-$n.out
  name=$(ctr_snapshotter "$mode")
  [ "$mode" = ctr-full ] && ref=$org_ref
  errlog=$run/logs/$tag.ctr.log
  : >"$errlog"
  start_snapshotter "$mode" "$run/logs/$tag.snapshotter.log"
  start_containerd
  drop_caches
  deadline=$(($(date +%s) + sample_timeout))
  s0=$(stats_now)

  rc=0
  if [ "$mode" = ctr-full ]; then
    timed "$out" "${ctr[@]}" images pull --plain-http "$ref" || rc=$?
  else
    timed "$out" "${ctr[@]}" images rpull --plain-http --snapshotter "$name" "$ref" || rc=$?
  fi
  pull=$elapsed; status=$(phase_status pull $rc "$out" "")
  if [ -z "$status" ]; then
    # ctr (urfave/cli) moves flag-like arguments (the program's -c is its
    # --config) in front of the positional ones unless they follow "--",
    # and takes a "--" right after a bool flag for that flag's value: so
    # the valued flag last, then "--".
    rc=0; timed "$out" "${ctr[@]}" containers create --net-host --snapshotter "$name" -- "$ref" bench \
      "$(container_program "$w")" -c "$(container_script "$w")" || rc=$?
    create=$elapsed; status=$(phase_status create $rc "$out" "")
  fi
  if [ -z "$status" ]; then
    rc=0; timed "$out" "${ctr[@]}" tasks start bench || rc=$?
    start=$elapsed; status=$(phase_status start $rc "$out" "$(expected_output "$w")")
  fi
  total=$(awk -v a="$pull" -v b="$create" -v c="$start" 'BEGIN { t = 0; if (a != "NA") t += a; if (b != "NA") t += b; if (c != "NA") t += c; printf "%.3f", t }')
  s1=$(stats_now)
  sample_stats=$(delta "$s0" "$s1")
  if [ "$mode" != ctr-full ]; then
    # Layers the snapshotter mounted (upstream's check_remote_snapshots):
    # FUSE mounts under its root.
    layers=$(findmnt -rn -o TARGET,FSTYPE | awk -v d="$snap_dir/" 'index($1, d) == 1 && $2 ~ /^fuse/' | wc -l)
    if kill -0 "$snap_pid" 2>/dev/null; then
      rss=$(snapshotter_rss)
    else
      status=${status:-failed:snapshotter-exited}
    fi
    [ -n "$status" ] || [ "$layers" -gt 0 ] || status=fallback:no-remote-layers
  fi
  stop_containerd
  stop_snapshotter
  # shellcheck disable=SC2086 # the stats are space-separated fields
  printf '%s\t' "$mode" "$w" "$n" "${status:-ok}" "$pull" "$create" "$start" "$total" \
    $sample_stats NA NA NA NA "$rss"
  printf '%s\n' "$layers"
}
