#!/usr/bin/env bash
# Generates the benchmark input: a tar of real system files (binaries,
# shared libraries, text, already-compressed docs), picked in a fixed order
# until TARGET_MB is reached, so the file-size and compressibility mix is
# that of a real container root file system.
set -euo pipefail
out=${1:?usage: make-input.sh OUT.tar [TARGET_MB]}
target_mb=${2:-256}
list=$(mktemp)
trap 'rm -f "$list"' EXIT
find /usr/lib /usr/bin /usr/share /usr/include -xdev -type f -size -64M -printf '%p\t%s\n' 2>/dev/null \
  | LC_ALL=C sort >"$list.all" || true
awk -F '\t' -v limit=$((target_mb * 1024 * 1024)) \
  '{ total += $2; print $1; if (total >= limit) exit }' "$list.all" >"$list"
rm -f "$list.all"
# Unreadable files are skipped with a warning; tar then exits 1, which is fine.
tar --sort=name --no-recursion -cf "$out" -T "$list" 2>/dev/null || [ $? -eq 1 ]
echo "$(wc -l <"$list") files, $(($(stat -c %s "$out") / 1048576)) MiB -> $out"
