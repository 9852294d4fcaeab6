#!/usr/bin/env bash
# Fails (and lists the files) when clang-format would change any tracked C++ file.
set -euo pipefail
cd "$1"
files=$(git ls-files -- '*.cpp' '*.hpp' '*.h' '*.cc' 2>/dev/null || true)
[ -n "$files" ] || { echo "no C++ files tracked"; exit 0; }
bad=()
for f in $files; do
  [ -f "$f" ] || continue
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "clang-format would change these files (run: clang-format -i <file>):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "$(echo "$files" | wc -w) files formatted"
