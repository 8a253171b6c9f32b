#!/usr/bin/env bash
# Self-consistency of the oracle: generate every shape with upstream, then
# check each upstream blob against its expected listing with the upstream reader.
# Usage: tests/interop/selfcheck.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-$(mktemp -d)}
bin=$out/oracle
go build -o "$bin" ./cmd/oracle
"$bin" gen "$out/shapes"
pass=0 fail=0
for dir in "$out"/shapes/*/; do
  name=$(basename "$dir")
  args=(--blob "$dir/blob.esgz" --expect "$dir/expected.json" --toc-digest "$(cat "$dir/toc-digest.txt")")
  [ -f "$dir/toc.gz" ] && args+=(--external-toc "$dir/toc.gz")
  grep -q '"minChunkSize": 0' "$dir/meta.json" || args+=(--min-chunk)
  if result=$("$bin" check "${args[@]}" 2>&1); then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    printf '%s FAILED:\n%s\n' "$name" "$result"
  fi
done
echo "selfcheck: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
