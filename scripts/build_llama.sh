#!/usr/bin/env bash
# Build llama-cpp-python (the Python bindings) and the llama.cpp command-line tools
# (llama-quantize, llama-imatrix, llama-perplexity) from ONE source tree: the llama-cpp-python sdist
# vendors llama.cpp, so bindings and tools are the same version. Results are cached outside the repo,
# keyed by version and Python tag, so a second run is a no-op:
#   $SILENTZONE_HOME/build/llama-cpp-python-<ver>/wheel/*.whl
#   $SILENTZONE_HOME/build/llama-cpp-python-<ver>/bin/llama-{quantize,imatrix,perplexity}
# Usage: scripts/build_llama.sh <python-of-the-venv> [version]
set -euo pipefail
PY=${1:?python interpreter}
VER=${2:-0.3.36}
HOME_DIR=${SILENTZONE_HOME:-$HOME/.cache/silentzone}
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
DEST="$HOME_DIR/build/llama-cpp-python-$VER-$PYTAG"
JOBS=${JOBS:-$(nproc)}
# -DGGML_NATIVE=OFF keeps the build portable (AVX2/FMA/F16C on, no -march=native) so a cached build
# moves between machines of one kind; LLAVA/mtmd is not needed.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_MTMD=OFF"
TOOLS="llama-quantize llama-imatrix llama-perplexity"
mkdir -p "$DEST"
SRC="$DEST/src"
fetch_src() {
  if [ ! -f "$SRC/.complete" ]; then
    rm -rf "$SRC" "$DEST/sdist"; mkdir -p "$DEST/sdist"
    "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$DEST/sdist"
    mkdir -p "$SRC.tmp" && tar xzf "$DEST"/sdist/llama_cpp_python-"$VER".tar.gz -C "$SRC.tmp" --strip-components=1
    mv "$SRC.tmp" "$SRC" && touch "$SRC/.complete"
  fi
}
if ! ls "$DEST"/wheel/llama_cpp_python-*.whl >/dev/null 2>&1; then
  fetch_src
  echo "[build_llama] building llama-cpp-python $VER wheel (about 6 minutes on 2 cores)"
  rm -rf "$DEST/wheel.tmp"
  CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$PY" -m pip wheel -q --no-deps "$SRC" -w "$DEST/wheel.tmp"
  mv "$DEST/wheel.tmp" "$DEST/wheel"
fi
missing=0; for t in $TOOLS; do [ -x "$DEST/bin/$t" ] || missing=1; done
if [ $missing = 1 ]; then
  fetch_src
  echo "[build_llama] building $TOOLS (about 5 minutes on 2 cores)"
  B="$DEST/cmake-build"
  cmake -S "$SRC/vendor/llama.cpp" -B "$B" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_MTMD=OFF > "$DEST/cmake-configure.log"
  cmake --build "$B" -j "$JOBS" --target $TOOLS > "$DEST/cmake-build.log"
  mkdir -p "$DEST/bin.tmp"
  for t in $TOOLS; do cp "$B/bin/$t" "$DEST/bin.tmp/"; done
  rm -rf "$DEST/bin"; mv "$DEST/bin.tmp" "$DEST/bin"
fi
echo "$DEST"
