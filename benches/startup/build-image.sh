#!/usr/bin/env bash
# build-image.sh DIR: a two-layer Debian bookworm + python3 image as an OCI
# image layout at DIR/oci (tag "org", gzip layers), the way a Dockerfile
# `FROM debian` + `RUN apt-get install python3` would make it:
#   layer 0: debootstrap --variant=minbase bookworm (apt lists removed)
#   layer 1: apt-get install --no-install-recommends python3, run in an
#            overlay over layer 0; the upper dir is the diff (overlayfs
#            whiteouts turned into OCI .wh. entries)
# Skips everything when DIR/oci/index.json exists (delete DIR to rebuild).
# Root only. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ -f "$dir/oci/index.json" ] && exit 0
command -v debootstrap >/dev/null || {
  echo "installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
mkdir -p "$dir"
build=$dir/build
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$build" "$dir/oci"
mkdir -p "$build"/{base,upper,ovwork,merged}

echo "debootstrap bookworm (minbase) from $mirror" >&2
debootstrap --variant=minbase bookworm "$build/base" "$mirror" >"$build/debootstrap.log" 2>&1 ||
  { tail -20 "$build/debootstrap.log" >&2; exit 1; }
rm -rf "$build/base/var/lib/apt/lists/"* "$build/base/var/cache/apt/archives/"*.deb
tar --numeric-owner --sort=name -C "$build/base" -cf "$build/layer0.tar" .

echo "apt-get install python3 in an overlay over the base" >&2
mount -t overlay overlay -o "lowerdir=$build/base,upperdir=$build/upper,workdir=$build/ovwork" "$build/merged"
mounts+=("$build/merged")
m=$build/merged
mount -t proc proc "$m/proc" && mounts+=("$m/proc")
mount --bind /dev "$m/dev" && mounts+=("$m/dev")
# The host's resolver, bind-mounted so the layer keeps the base's file.
[ -e "$m/etc/resolv.conf" ] || : >"$build/base/etc/resolv.conf"
mount --bind /etc/resolv.conf "$m/etc/resolv.conf" && mounts+=("$m/etc/resolv.conf")
chroot "$m" env DEBIAN_FRONTEND=noninteractive sh -c \
  'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 && apt-get clean && rm -rf /var/lib/apt/lists/*' \
  >"$build/apt.log" 2>&1 || { tail -20 "$build/apt.log" >&2; exit 1; }
cleanup
mounts=()
python3 "$here/overlay-to-oci.py" "$build/upper" "$build/base"
tar --numeric-owner --sort=name -C "$build/upper" -cf "$build/layer1.tar" .

python3 "$here/oci-layout.py" "$dir/oci" org "$build/layer0.tar" "$build/layer1.tar"
rm -rf "$build"
