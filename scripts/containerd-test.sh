#!/usr/bin/env bash
# The containerd end-to-end test (tests/e2e/containerd.rs): installs
# libestargz into the staging tree (as scripts/go-test.sh does), builds
# estargz-snapshotter (bindings/go/snapshotter) against it, and runs the
# tests with the binary in ESTARGZ_SNAPSHOTTER; builds crictl (cri-tools,
# tests/crictl) for the CRI test and passes it in ESTARGZ_CRICTL. Needs root, /dev/fuse,
# containerd, ctr-remote, runc, skopeo and docker-registry (.ci/run
# installs them), cargo-c 0.10.24 and Go.
# The last line is "containerd tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

# shellcheck source=scripts/lib/libestargz.sh
source scripts/lib/libestargz.sh
install_libestargz

bin=$CARGO_TARGET_DIR/estargz-snapshotter
(cd bindings/go/snapshotter && go build -o "$bin" ./cmd/estargz-snapshotter)
# crictl for the CRI test: cri-tools pinned in tests/crictl/go.mod (a
# `tool` requirement; its CRI v1 client is what containerd 1.6 serves).
crictl=$CARGO_TARGET_DIR/crictl
(cd tests/crictl && GOFLAGS=-mod=readonly go build -trimpath -o "$crictl" sigs.k8s.io/cri-tools/cmd/crictl)

status=0
out=$CARGO_TARGET_DIR/containerd-test-output.txt
ESTARGZ_SNAPSHOTTER=$bin ESTARGZ_CRICTL=$crictl cargo test -p estargz-tests --release --test containerd -- --ignored --nocapture \
  2>&1 | tee "$out" || status=1
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$out" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$out" | awk '{s += $1} END {print s + 0}')
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  failed=1
fi
echo "containerd tests: ${passed} passed, ${failed} failed"
[ "$status" = 0 ]
