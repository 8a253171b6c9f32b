#!/usr/bin/env bash
# The main job on local files: convert a tar (default: a tar of this
# repository's sources) to eStargz, inspect and verify it, read one file,
# extract it, and check the extracted tree equals `tar -x` of the input.
#   usage: scripts/demo.sh [INPUT.tar|INPUT.tar.gz|DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p estargz-cli
estargz=$PWD/target/release/estargz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

input=${1:-}
if [ -z "$input" ]; then
  input=$work/sample.tar
  git ls-files -z | tar --null --sort=name -cf "$input" -T -
  echo "input: a tar of this repository ($(du -h "$input" | cut -f1))"
fi

echo "--- estargz convert"
"$estargz" convert "$input" "$work/layer.esgz"
toc_digest=$("$estargz" inspect --json "$work/layer.esgz" | sed -n 's/.*"tocDigest": "\(.*\)".*/\1/p')
echo "--- estargz inspect"
"$estargz" inspect "$work/layer.esgz"
echo "--- estargz verify"
"$estargz" verify --expected-toc-digest "$toc_digest" "$work/layer.esgz"
echo "--- estargz ls -l (first 10)"
"$estargz" ls -l "$work/layer.esgz" | head -n 10
first_file=$("$estargz" ls -l "$work/layer.esgz" | awk '$1 ~ /^-/ && $NF !~ /landmark/ {print $NF; exit}')
echo "--- estargz cat $first_file (first 5 lines)"
"$estargz" cat "$work/layer.esgz" "$first_file" | head -n 5
echo "--- estargz extract, compared with tar -x"
"$estargz" extract "$work/layer.esgz" "$work/extracted"
mkdir "$work/reference"
if [ -d "$input" ]; then
  cp -a "$input/." "$work/reference/"
else
  tar -C "$work/reference" -xf "$input"
fi
diff -r --no-dereference "$work/reference" "$work/extracted"
echo "extracted tree equals tar -x of the input"
