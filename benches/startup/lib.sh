# Functions of benches/startup-bench.sh (sourced; uses its variables:
# repo, work, run, modes, OURS_FLAGS, UPSTREAM_FLAGS, sample_timeout, ...).

RAW_COLUMNS='mode\tworkload\tsample\tstatus\tpull_s\tcreate_s\tstart_s\ttotal_s\trequests\tconnections\tbytes\tsave_s\tsave_requests\tsave_connections\tsave_bytes\trss_kib\tstore_layers'

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# umount_under DIR: detaches every mount below DIR, deepest first.
umount_under() {
  local m
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

registry_pid=
proxy_pid=
timed_pid=
daemon_pid=
mnt=$run/store/mnt
podman_dir=$run/podman

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  if [ -n "$timed_pid" ]; then
    kill -TERM "$timed_pid" 2>/dev/null && wait "$timed_pid" 2>/dev/null
  fi
  if [ -d "$podman_dir/graph" ] && [ -n "${pm[0]+set}" ]; then
    log "cleaning up"
    reset_podman
  fi
  stop_daemon
  cleanup_containerd
  for p in $proxy_pid $registry_pid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  umount_under "$run"
  rm -rf --one-file-system "$podman_dir/graph" "$podman_dir/run" "$run/store" "$run/save.tar"
  exit $rc
}

# build_go_driver NAME: our Go driver over upstream's packages in
# benches/NAME (stargz-store, stargz-grpc), built once per source version
# into $work/bin; prints the binary's path.
build_go_driver() {
  local src=$repo/benches/$1 key bin
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  bin=$work/bin/$1-bench-$key
  if [ ! -x "$bin" ]; then
    log "building benches/$1 (upstream v0.15.1; once, cached in $work/bin)"
    (cd "$src" && GOFLAGS=-mod=readonly nice go build -trimpath -o "$bin.tmp" .) >&2
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

# A docker-registry on 127.0.0.1 with its storage under $run.
start_registry() {
  local port
  port=$(free_port)
  cat >"$run/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $run/registry}}
http: {addr: 127.0.0.1:$port}
YAML
  docker-registry serve "$run/registry.yml" >"$run/logs/registry.log" 2>&1 &
  registry_pid=$!
  registry=127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "http://$registry/v2/" >/dev/null && return; sleep 0.1; done
  die "docker-registry did not start: $(tail -5 "$run/logs/registry.log")"
}

# The shaped link; its counters (--stats-file) give requests, connections
# and bytes per phase.
start_proxy() {
  stats_file=$run/proxy-stats.json
  local args=("$registry" --latency-ms "$latency_ms" --rate-mbit "$rate_mbit" --stats-file "$stats_file")
  stats_source=proxy
  "$faultproxy" "${args[@]}" >"$run/proxy.addr" 2>"$run/logs/proxy.log" &
  proxy_pid=$!
  for _ in $(seq 50); do [ -s "$run/proxy.addr" ] && break; sleep 0.1; done
  proxy=$(head -1 "$run/proxy.addr")
  [ -n "$proxy" ] || die "faultproxy did not start: $(cat "$run/logs/proxy.log")"
  # Podman probes https first; the proxy closes TLS handshakes at once, as
  # a plain-HTTP registry does, so pulls do not wait for a TLS timeout.
}

# stats_now: "requests connections bytes" so far (NA when unknown).
stats_now() {
  local text r c b
  # The file is rewritten every 200 ms: wait for a write after the phase.
  sleep 0.5
  for _ in $(seq 20); do
    text=$(cat "$stats_file" 2>/dev/null || true)
    r=$(json_number "$text" requests)
    c=$(json_number "$text" connections)
    b=$(json_number "$text" bytes_down)
    if [ -n "$r" ] && [ -n "$c" ] && [ -n "$b" ]; then
      echo "$r $c $b"
      return
    fi
    sleep 0.1
  done
  echo "NA NA NA"
}
json_number() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" <<<"$1"; }

# delta "A1 A2 A3" "B1 B2 B3": field-wise B - A (NA stays NA).
delta() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? " " : ""), (x[i] == "NA" || y[i] == "NA" ? "NA" : y[i] - x[i]) }'
}

image_mb() {
  skopeo inspect --raw --tls-verify=false "docker://$registry/bench/python:$1" |
    python3 -c 'import json, sys; print("%.1f" % (sum(l["size"] for l in json.load(sys.stdin)["layers"]) / 1e6))'
}

write_podman_config() {
  mkdir -p "$podman_dir" "$mnt"
  local storage="[storage]
driver = \"overlay\"
graphroot = \"$podman_dir/graph\"
runroot = \"$podman_dir/run\""
  echo "$storage" >"$podman_dir/storage-full.conf"
  printf '%s\n[storage.options]\nadditionallayerstores = ["%s:ref"]\n' "$storage" "$mnt" >"$podman_dir/storage-store.conf"
  printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$proxy" >"$podman_dir/registries.conf"
}

# store_of MODE: the store a Podman mode runs (full, ours or upstream).
store_of() { echo "${1%-opt}"; }

# opt_tag WORKLOAD: the tag of the image optimized for WORKLOAD (save runs
# the read-all, so it uses the read-all's image).
opt_tag() { case $1 in save) echo opt-readall ;; *) echo "opt-$1" ;; esac; }

# build_optimized WORKLOAD: `estargz optimize` of the eStargz image running
# WORKLOAD's command, pushed straight to the registry (not through the
# proxy) under opt_tag; the record goes to the logs. Once per tag per run.
build_optimized() {
  local tag t0
  tag=$(opt_tag "$1")
  [ -e "$run/logs/$tag.record.json" ] && return
  log "optimizing the eStargz image for $1 (estargz optimize -> $tag)"
  t0=$(now)
  "$estargz" optimize --plain-http --record-out "$run/logs/$tag.record.json" \
    --temp-dir "$run" "$registry/bench/python:esgz" "$registry/bench/python:$tag" \
    -- "$(container_program "$1")" -c "$(container_script "$1")" \
    >"$run/logs/$tag.optimize.out" 2>"$run/logs/$tag.optimize.log" ||
    die "estargz optimize for $1 failed: $(tail -5 "$run/logs/$tag.optimize.log")"
  log "  $(tail -1 "$run/logs/$tag.optimize.log") ($(since "$t0") s; $(image_mb "$tag") MB)"
}

# podman_cmd MODE: sets the array pm = podman with the bench's own storage
# (graphroot under $run), registries and runtime flags.
podman_cmd() {
  local conf=$podman_dir/storage-store.conf
  [ "$(store_of "$1")" = full ] && conf=$podman_dir/storage-full.conf
  pm=(env "CONTAINERS_STORAGE_CONF=$conf" "CONTAINERS_REGISTRIES_CONF=$podman_dir/registries.conf"
    podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
}

# Removes containers and images (while the store still serves them, so it
# sees its layers released), then the storage itself.
reset_podman() {
  timeout -k 10 120 "${pm[@]}" rm -af -t 0 >/dev/null 2>&1 || true
  timeout -k 10 120 "${pm[@]}" rmi -af >/dev/null 2>&1 || true
  umount_under "$podman_dir"
  rm -rf --one-file-system "$podman_dir/graph" "$podman_dir/run"
}

# start_daemon MODE LOG: a fresh store with empty caches, mounted at $mnt.
start_daemon() {
  local mode dlog=$2
  mode=$(store_of "$1")
  daemon_pid=
  [ "$mode" = full ] && return
  mountpoint -q "$mnt" && die "$mnt is still mounted"
  rm -rf --one-file-system "$run/store"
  mkdir -p "$mnt"
  if [ "$mode" = ours ]; then
    # shellcheck disable=SC2086 # OURS_FLAGS is a list of flags
    "$fuse" store "$mnt" --plain-http --cache-dir "$run/store/cache" $OURS_FLAGS >"$dlog" 2>&1 &
  else
    # shellcheck disable=SC2086
    "$upstream_bin" -mountpoint "$mnt" -root "$run/store/root" -plain-http "$proxy" $UPSTREAM_FLAGS >"$dlog" 2>&1 &
  fi
  daemon_pid=$!
  for _ in $(seq 300); do
    mountpoint -q "$mnt" && return
    kill -0 "$daemon_pid" 2>/dev/null || die "the $mode store exited before mounting: $(tail -5 "$dlog")"
    sleep 0.1
  done
  die "the $mode store did not mount in 30 s: $(tail -5 "$dlog")"
}

# SIGTERM (both stores unmount on it), SIGKILL after 20 s; the mount is
# detached if it is still there.
stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  kill -TERM "$daemon_pid" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$daemon_pid" 2>/dev/null; then
    log "store $daemon_pid ignored SIGTERM for 20 s: killing it"
    kill -KILL "$daemon_pid" 2>/dev/null
  fi
  wait "$daemon_pid" 2>/dev/null || true
  mountpoint -q "$mnt" && umount -l "$mnt"
  daemon_pid=
}

# timed OUT CMD...: runs CMD (stdout to OUT, stderr to $errlog) within what
# is left of the sample's time; sets $elapsed; returns CMD's status (124 or
# 137 when cut by the timeout).
timed() {
  local out=$1 left t0 rc=0
  shift
  left=$((deadline - $(date +%s)))
  if ((left <= 0)); then
    elapsed=0
    return 124
  fi
  t0=$(now)
  # In the background, so that an INT/TERM trap runs at once (bash defers
  # traps while a foreground command runs, and timeout puts the command in
  # a process group of its own, out of reach of Ctrl-C).
  timeout -k 10 "$left" "$@" >"$out" 2>>"$errlog" &
  timed_pid=$!
  wait "$timed_pid" || rc=$?
  timed_pid=
  elapsed=$(since "$t0")
  return $rc
}

# The container's command: PROGRAM -c SCRIPT.
container_program() { case $1 in hello | import) echo python3 ;; *) echo sh ;; esac; }
container_script() {
  case $1 in
    hello) echo 'print("hello")' ;;
    import) echo 'import json, sqlite3, email, http.client, decimal, asyncio, xml.etree.ElementTree, argparse, logging, unittest, csv, zipfile, tarfile, pathlib, subprocess; print("imported")' ;;
    readall | save) echo 'find / -xdev -type f -exec cat {} + >/dev/null && echo read-all-done' ;;
  esac
}
expected_output() {
  case $1 in hello) echo hello ;; import) echo imported ;; *) echo read-all-done ;; esac
}

# phase_status NAME RC OUT WANT: "" when fine, else the sample's status.
phase_status() {
  case $2 in
    0) if [ -n "$4" ] && ! grep -qx -- "$4" "$3"; then echo "failed:$1-output"; fi ;;
    124 | 137) echo "timeout:$1" ;;
    *) echo "failed:$1($2)" ;;
  esac
}

# sample MODE WORKLOAD N: one clean-state sample; prints one TSV row.
sample() {
  local mode=$1 w=$2 n=$3 ref=$esgz_ref status= rc pull=NA create=NA start=NA total=NA
  local s0 s1 s2 sample_stats="NA NA NA" save=NA save_stats="NA NA NA" rss=NA layers=NA
  local tag=$mode-$w-$n out=$run/logs/$mode-$w-$n.out
  [ "$mode" = full ] && ref=$org_ref
  [ "$mode" != "${mode%-opt}" ] && ref=$proxy/bench/python:$(opt_tag "$w")
  errlog=$run/logs/$tag.podman.log
  : >"$errlog"
  podman_cmd "$mode"
  rm -rf --one-file-system "$podman_dir/graph" "$podman_dir/run"
  start_daemon "$mode" "$run/logs/$tag.store.log"
  drop_caches
  deadline=$(($(date +%s) + sample_timeout))
  s0=$(stats_now)

  rc=0; timed "$out" "${pm[@]}" pull -q "$ref" || rc=$?
  pull=$elapsed; status=$(phase_status pull $rc "$out" "")
  if [ -z "$status" ]; then
    rc=0; timed "$out" "${pm[@]}" create --name bench --network=none \
      --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$ref" \
      "$(container_program "$w")" -c "$(container_script "$w")" || rc=$?
    create=$elapsed; status=$(phase_status create $rc "$out" "")
  fi
  if [ -z "$status" ]; then
    rc=0; timed "$out" "${pm[@]}" start -a bench || rc=$?
    start=$elapsed; status=$(phase_status start $rc "$out" "$(expected_output "$w")")
  fi
  total=$(awk -v a="$pull" -v b="$create" -v c="$start" 'BEGIN { t = 0; if (a != "NA") t += a; if (b != "NA") t += b; if (c != "NA") t += c; printf "%.3f", t }')
  s1=$(stats_now)
  sample_stats=$(delta "$s0" "$s1")
  if [ -z "$status" ] && [ "$w" = save ]; then
    rc=0; timed "$out" "${pm[@]}" save -o "$run/save.tar" "$ref" || rc=$?
    save=$elapsed; status=$(phase_status save $rc "$out" "")
    s2=$(stats_now)
    save_stats=$(delta "$s1" "$s2")
    rm -f "$run/save.tar"
  fi
  if [ "$mode" != full ]; then
    # How many layers Podman took from the store (upstream's
    # check_remote_snapshots, here from the overlay driver's records).
    layers=$(find "$podman_dir/graph/overlay" -maxdepth 2 -name additionallayer 2>/dev/null | wc -l)
    if kill -0 "$daemon_pid" 2>/dev/null; then
      rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon_pid/status")
    else
      status=${status:-failed:store-exited}
    fi
    [ -n "$status" ] || [ "$layers" -gt 0 ] || status=fallback:no-store-layers
  fi
  reset_podman
  stop_daemon
  # shellcheck disable=SC2086 # the stats are space-separated fields
  printf '%s\t' "$mode" "$w" "$n" "${status:-ok}" "$pull" "$create" "$start" "$total" \
    $sample_stats "$save" $save_stats "$rss"
  printf '%s\n' "$layers"
}

show_sample() {
  awk -F'\t' '{ printf "  %-8s %-7s #%s %-22s pull %s create %s start %s total %s | req %s conn %s bytes %s | save %s s, %s bytes | rss %s KiB | store layers %s\n",
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $15, $16, $17 }' >&2
}

summarise() { python3 "$repo/benches/startup/summarise.py" "$1"; }
print_table() { python3 "$repo/benches/startup/summarise.py" --table "$1"; }
