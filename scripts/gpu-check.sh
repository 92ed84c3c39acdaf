#!/usr/bin/env bash
# GPU check of the CUDA backend: build with CUDA (or use a carried build),
# run test/cuda.test.ts and bench/gpu-gemm.ts, in under 8 minutes on an
# H100/H200 machine that cannot reach any registry.
#
# 1. Here (a machine with nvcc, node and node_modules), prepare what travels:
#      scripts/gpu-check.sh --prepare
#    It builds build-cuda (all native sources, QUANTFACE_CUDA=ON) and fills
#    build-cuda/carry/ (~30 MB): quantface.node, the test and the benchmark
#    bundled into plain .mjs files (tap replaced by a small stand-in, for a
#    machine without node_modules), node itself (xz; the GPU image has no
#    Node.js), and node-addon-api / node-api-headers (for building there).
# 2. On the GPU machine (device tool: carry ["build-cuda/carry"], timeout 540):
#      bash scripts/gpu-check.sh
#    (a) finds libcublasLt (Python packages' nvidia folders, else a search)
#        and puts its folder on LD_LIBRARY_PATH, (b) uses node from PATH or
#        the carried one, (c) prints nvidia-smi, (d) builds build-gpu there
#        with cmake + nvcc when they exist (cmake-js if node_modules has it),
#        else uses the carried build, (e) runs the CUDA tests against it
#        (tap if installed, else the bundled test), (f) runs the benchmark,
#        (g) copies logs and JSON to $OUT when set. Every step is timed out
#        against an overall budget (GPU_CHECK_BUDGET seconds, default 470).
#    GPU_CHECK_BUILD=0 skips the build there; GPU_CHECK_CARRIED_NODE=1 uses the
#    carried node even when one is on PATH.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARRY="$ROOT/build-cuda/carry"

# ------------------------------------------------------------------ prepare
if [ "${1:-}" = "--prepare" ]; then
  set -eo pipefail
  echo "+ building build-cuda (QUANTFACE_CUDA=ON, all sources)"
  # GPU_CHECK_QF_ONLY: a QF_ONLY regex for a partial build (development only; "." = all sources).
  npx cmake-js configure -O build-cuda --CDQUANTFACE_CUDA=ON "--CDQF_ONLY=${GPU_CHECK_QF_ONLY:-.}" >/dev/null
  npx cmake-js compile -O build-cuda 2>&1 | tail -3
  mkdir -p "$CARRY"
  cp build-cuda/Release/quantface.node "$CARRY/quantface.node"
  cat > "$CARRY/tap-shim.mjs" <<'EOF'
// Minimal stand-in for tap (t.test with {skip}, ok, equal, pass, fail,
// comment) for machines without node_modules. Prints TAP-like lines, a
// "# { total, pass, fail, skip }" summary and "N passed, N failed".
let n = 0, pass = 0, fail = 0, skip = 0;
let queue = Promise.resolve();
const out = (s) => process.stdout.write(s + '\n');
function assert(prefix, ok, msg) {
  n++;
  if (ok) pass++; else fail++;
  out(`${ok ? 'ok' : 'not ok'} ${n} - ${prefix}${msg ?? ''}`);
  return ok;
}
function sub(name) {
  const p = `[${name}] `;
  return {
    ok: (v, m) => assert(p, !!v, m),
    notOk: (v, m) => assert(p, !v, m),
    equal: (a, b, m) => assert(p, a === b, a === b ? m : `${m ?? ''} (got ${String(a)}, want ${String(b)})`),
    not: (a, b, m) => assert(p, a !== b, m),
    pass: (m) => assert(p, true, m),
    fail: (m) => assert(p, false, m),
    comment: (...m) => out(`# ${m.join(' ')}`),
  };
}
const t = {
  ...sub('top'),
  test(name, opts, fn) {
    if (typeof opts === 'function') { fn = opts; opts = {}; }
    queue = queue.then(async () => {
      if (opts && opts.skip) { skip++; out(`ok - ${name} # SKIP ${opts.skip === true ? '' : opts.skip}`); return; }
      out(`# Subtest: ${name}`);
      const before = fail, t0 = Date.now();
      try { await fn(sub(name)); } catch (e) { assert(`[${name}] `, false, `threw: ${e && e.stack ? e.stack : e}`); }
      out(`# ${fail === before ? 'ok' : 'FAILED'} - ${name} (${Date.now() - t0} ms)`);
    });
    return queue;
  },
};
process.on('beforeExit', () => {
  queue.then(() => {
    if (process.exitCode === undefined || process.exitCode === 0) process.exitCode = fail ? 1 : 0;
  });
});
process.on('exit', () => {
  out(`# { total: ${n + skip}, pass: ${pass}, fail: ${fail}, skip: ${skip} }`);
  out(`${pass} passed, ${fail} failed`);
  if (fail) process.exitCode = 1;
});
export default t;
EOF
  echo "+ bundling test/cuda.test.ts and bench/gpu-gemm.ts"
  npx esbuild test/cuda.test.ts --bundle --platform=node --format=esm --target=node18 \
    --alias:tap="$CARRY/tap-shim.mjs" --outfile="$CARRY/cuda.test.mjs" --log-level=warning
  npx esbuild bench/gpu-gemm.ts --bundle --platform=node --format=esm --target=node18 \
    --outfile="$CARRY/gpu-gemm.mjs" --log-level=warning
  mkdir -p "$CARRY/nm"
  rm -rf "$CARRY/nm/node-addon-api" "$CARRY/nm/node-api-headers"
  cp -r node_modules/node-addon-api node_modules/node-api-headers "$CARRY/nm/"
  NODE_BIN="$(command -v node)"
  if [ ! -f "$CARRY/node.xz" ] || [ "$(cat "$CARRY/node.version" 2>/dev/null)" != "$(node --version)" ]; then
    echo "+ compressing $NODE_BIN ($(node --version))"
    xz -T2 -6 -c "$NODE_BIN" > "$CARRY/node.xz"
    node --version > "$CARRY/node.version"
  fi
  echo "+ carry folder: $(du -sh "$CARRY" | cut -f1) in $CARRY"
  ls -la "$CARRY"
  echo "Run on the GPU machine: bash scripts/gpu-check.sh   (carry: [\"build-cuda/carry\"], timeout_s 540)"
  exit 0
fi

# ------------------------------------------------------------------ GPU run
BUDGET="${GPU_CHECK_BUDGET:-470}"
T0=$(date +%s)
LOGDIR="$(mktemp -d /tmp/gpu-check.XXXXXX)"
exec > >(tee "$LOGDIR/gpu-check.log") 2>&1
elapsed() { echo $(( $(date +%s) - T0 )); }
# step NAME MAX_SECONDS CMD...: runs CMD with a timeout of min(MAX, what is left of the budget - 10).
step() {
  local name="$1" max="$2"; shift 2
  local left=$(( BUDGET - $(elapsed) - 10 ))
  [ "$left" -lt "$max" ] && max="$left"
  if [ "$max" -lt 5 ]; then echo "+++ [$(elapsed)s] $name: SKIPPED (time budget spent)"; return 124; fi
  echo "+++ [$(elapsed)s] $name (timeout ${max}s): $*"
  timeout --kill-after=5 "$max" "$@"
  local rc=$?
  echo "+++ [$(elapsed)s] $name: exit $rc"
  return $rc
}
SUMMARY=()
note() { SUMMARY+=("$*"); echo "+++ $*"; }

echo "+++ gpu-check in $ROOT, $(date -u +%FT%TZ), budget ${BUDGET}s, logs in $LOGDIR"
step "nvidia-smi" 30 nvidia-smi | tee "$LOGDIR/nvidia-smi.txt"

# (a) cuBLASLt from the Python packages' nvidia folders, else a search.
cat > "$LOGDIR/find_cublaslt.py" <<'EOF'
import glob, os, site, sys
roots = []
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
try:
    roots += [os.path.join(p, 'nvidia') for p in site.getsitepackages()]
except Exception:
    pass
roots += [os.path.join(p, 'nvidia') for p in sys.path if p]
libs, incs = [], []
for r in dict.fromkeys(roots):
    if os.path.isdir(r):
        libs += glob.glob(os.path.join(r, '**', 'libcublasLt.so*'), recursive=True)
        incs += glob.glob(os.path.join(r, '**', 'cublasLt.h'), recursive=True)
def rank(p):
    for i, v in enumerate(('.so.13', '.so.12', '.so.11')):
        if v in os.path.basename(p):
            return i
    return 9
libs.sort(key=rank)
if libs:
    print('LIB=' + os.path.realpath(libs[0]))
if incs:
    print('INC=' + os.path.dirname(incs[0]))
EOF
CUBLASLT_INFO="$(step "find cuBLASLt in Python packages" 60 python3 "$LOGDIR/find_cublaslt.py" | grep -E '^(LIB|INC)=' || true)"
LT_LIB="$(echo "$CUBLASLT_INFO" | sed -n 's/^LIB=//p' | head -1)"
LT_INC="$(echo "$CUBLASLT_INFO" | sed -n 's/^INC=//p' | head -1)"
if [ -z "$LT_LIB" ]; then
  LT_LIB="$(step "search / for libcublasLt" 60 bash -c "find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -name 'libcublasLt.so*' -print 2>/dev/null | sort -r | head -1" | grep -v '^+++' | head -1)"
fi
if [ -n "$LT_LIB" ]; then
  export QUANTFACE_CUBLASLT="$LT_LIB"
  export LD_LIBRARY_PATH="$(dirname "$LT_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "cuBLASLt: $LT_LIB"
else
  note "cuBLASLt: NOT FOUND (the CUDA tests will report E_CUDA_UNAVAILABLE)"
fi
[ -n "$LT_INC" ] && export QUANTFACE_CUBLASLT_INCLUDE="$LT_INC" && note "cublasLt.h: $LT_INC"

# (b) node: from PATH, else the carried one.
NODE_OK=0
if [ -z "${GPU_CHECK_CARRIED_NODE:-}" ] && command -v node >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
  NODE_OK=1
elif [ -f "$CARRY/node.xz" ]; then
  mkdir -p /tmp/qf-node/bin
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$CARRY/node.xz" > /tmp/qf-node/bin/node
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$CARRY/node.xz" /tmp/qf-node/bin/node
  fi
  chmod +x /tmp/qf-node/bin/node
  export PATH="/tmp/qf-node/bin:$PATH"
  node --version >/dev/null 2>&1 && NODE_OK=1
fi
if [ "$NODE_OK" = 1 ]; then note "node: $(command -v node) $(node --version)"; else note "node: NOT AVAILABLE (nothing to run the tests with)"; fi

# node_modules: the headers the build needs, when there is no node_modules.
if [ ! -d node_modules/node-addon-api ] && [ -d "$CARRY/nm" ]; then
  mkdir -p node_modules && cp -r "$CARRY/nm/." node_modules/
fi

# (d) build there: cmake + nvcc (+ cmake-js when node_modules has it).
BUILT=""
NVCC="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)"
if [ "${GPU_CHECK_BUILD:-1}" != 0 ] && [ -n "$NVCC" ] && command -v cmake >/dev/null 2>&1 && [ "$NODE_OK" = 1 ] && [ -d node_modules/node-addon-api ]; then
  export CUDACXX="$NVCC"
  JOBS="$(nproc 2>/dev/null || echo 8)"
  if [ -x node_modules/.bin/cmake-js ]; then
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" step "build build-gpu (cmake-js, CUDA ON)" 200 npx cmake-js rebuild -O build-gpu --CDQUANTFACE_CUDA=ON > "$LOGDIR/build-gpu.log" 2>&1
  else
    GEN=""; command -v ninja >/dev/null 2>&1 && GEN="-G Ninja"
    INC="$ROOT/node_modules/node-api-headers/include"
    rm -rf build-gpu
    step "configure build-gpu (cmake, CUDA ON)" 60 cmake -S . -B build-gpu $GEN -DCMAKE_BUILD_TYPE=Release -DQUANTFACE_CUDA=ON \
      "-DCMAKE_JS_INC=$INC" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$ROOT/build-gpu/Release" > "$LOGDIR/build-gpu.log" 2>&1 &&
    step "build build-gpu" 200 cmake --build build-gpu -j "$JOBS" >> "$LOGDIR/build-gpu.log" 2>&1
  fi
  tail -5 "$LOGDIR/build-gpu.log"
  grep -E "quantface: (CUDA|using|cublasLt)" "$LOGDIR/build-gpu.log" || true
  BUILT="$(find build-gpu -name quantface.node 2>/dev/null | head -1)"
  if [ -n "$BUILT" ]; then note "built there: $BUILT"; else note "build there FAILED (see build-gpu.log); using the carried build"; fi
else
  note "no build there (nvcc: ${NVCC:-none}, cmake: $(command -v cmake || echo none), node: $NODE_OK, GPU_CHECK_BUILD=${GPU_CHECK_BUILD:-1})"
fi
BINDINGS=()
[ -n "$BUILT" ] && BINDINGS+=("$ROOT/$BUILT")
# The committed prebuild is what npm users get: check it on the GPU too.
[ -f prebuilds/linux-x64/quantface.node ] && [ "${GPU_CHECK_PREBUILD:-1}" != 0 ] && BINDINGS+=("$ROOT/prebuilds/linux-x64/quantface.node")
[ -f "$CARRY/quantface.node" ] && BINDINGS+=("$CARRY/quantface.node")
[ ${#BINDINGS[@]} -eq 0 ] && [ -f build-cuda/Release/quantface.node ] && BINDINGS+=("$ROOT/build-cuda/Release/quantface.node")
[ ${#BINDINGS[@]} -eq 0 ] && note "no quantface.node to test"

# (e) tests, against each binding (the one built there first).
i=0
for B in "${BINDINGS[@]}"; do
  [ "$NODE_OK" = 1 ] || break
  i=$((i + 1))
  TLOG="$LOGDIR/cuda-test-$i.log"
  echo "+++ binding $i: $B"
  QUANTFACE_BINDING="$B" node -e 'const c = require(process.env.QUANTFACE_BINDING).info().cuda; console.log("info().cuda = " + JSON.stringify(c))' 2>&1 | tee "$TLOG"
  if [ -x node_modules/.bin/tap ]; then
    QUANTFACE_BINDING="$B" step "tap test/cuda.test.ts (binding $i)" 120 npx tap --reporter=tap test/cuda.test.ts >> "$TLOG" 2>&1
  else
    QUANTFACE_BINDING="$B" step "bundled test/cuda.test.ts (binding $i)" 120 node "$CARRY/cuda.test.mjs" >> "$TLOG" 2>&1
  fi
  rc=$?
  grep -E "^not ok|^ *not ok|# SKIP|FAILED|^# \{|passed, .* failed|implementations used|GPU:" "$TLOG" | head -40
  note "tests with binding $i ($B): exit $rc, $(grep -E 'passed, .* failed|^# \{' "$TLOG" | tail -1)"
done

# (f) benchmark, with the first binding.
if [ "$NODE_OK" = 1 ] && [ ${#BINDINGS[@]} -gt 0 ]; then
  BLOG="$LOGDIR/gpu-gemm.log"
  if [ -x node_modules/.bin/tsx ]; then
    QUANTFACE_BINDING="${BINDINGS[0]}" step "bench/gpu-gemm.ts" 150 node --import tsx bench/gpu-gemm.ts --json "$LOGDIR/gpu-gemm.json" > "$BLOG" 2>&1
  else
    QUANTFACE_BINDING="${BINDINGS[0]}" step "bench/gpu-gemm.ts (bundled)" 150 node "$CARRY/gpu-gemm.mjs" --json "$LOGDIR/gpu-gemm.json" > "$BLOG" 2>&1
  fi
  note "benchmark: exit $?"
fi

# (g) results to $OUT.
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$LOGDIR"/*.log "$LOGDIR"/*.json "$LOGDIR"/*.txt "$OUT"/ 2>/dev/null || true
fi
echo
echo "================ gpu-check summary ($(elapsed)s)"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
[ -f "$LOGDIR/gpu-gemm.log" ] && tail -8 "$LOGDIR/gpu-gemm.log"
