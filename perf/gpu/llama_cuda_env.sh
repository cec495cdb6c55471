# Sourced by perf/gpu/llama_cuda.sh and perf/gpu/llama_cuda_diag.sh on the lent GPU machine (repository
# root): installs the carried bindings, unpacks the pinned llama.cpp tree, and builds it with CUDA
# (about 5 minutes on 16 cores) unless a build of an earlier call was carried back in
# $CARRY/cuda-bin.tar.xz.part* (made by llama_cuda_pack below; the same absolute path, so the tools'
# RUNPATH holds). Exports B (the build folder), LLAMA_CPP_LIB_PATH, PYTHONPATH.
#
# It needs, in .llcarry/ (carried; made on the development machine, see docs/performance.md "GPU"):
#   llama-src.tar.xz   the sdist's tree trimmed to what the build and the converter need (4.4 MB)
#   llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl   the bindings alone (built with
#                      CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"), pointed at the CUDA
#                      libraries through LLAMA_CPP_LIB_PATH
#   diskcache-5.6.3-py3-none-any.whl                    a dependency of the bindings
# and .gpucarry/pkgs (the wiki calibration text, laid out as the exllamav3 package folder).
OUT=${OUT:-/tmp/llama-cuda-out}
mkdir -p "$OUT"
CARRY=${CARRY:-.llcarry}
export SILENTZONE_HOME=${SILENTZONE_HOME:-/root/szgpu}
tag=cp$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
B=$SILENTZONE_HOME/build/llama-cpp-python-0.3.36-$tag   # where silentzone.llama_tools looks
mkdir -p "$B"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "${SITE:=/tmp/site}" "$CARRY"/*.whl || return 1
export PYTHONPATH=$SITE:$PWD/.gpucarry/pkgs:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
[ -d "$B/src" ] || tar xJf "$CARRY/llama-src.tar.xz" -C "$B"
if [ ! -x "$B/cmake-build-cuda/bin/llama-perplexity" ] && ls "$CARRY"/cuda-bin.tar.xz.part* >/dev/null 2>&1; then
  cat "$CARRY"/cuda-bin.tar.xz.part* | tar xJf - -C "$B" && echo "llama.cpp CUDA build: carried back from an earlier call" | tee -a "$OUT/build.log"
fi
if [ ! -x "$B/cmake-build-cuda/bin/llama-perplexity" ]; then
  t0=$(date +%s)
  cmake -S "$B/src/vendor/llama.cpp" -B "$B/cmake-build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DGGML_CCACHE=OFF > "$OUT/build.log" 2>&1 \
  && cmake --build "$B/cmake-build-cuda" -j16 --target llama llama-perplexity llama-quantize llama-imatrix \
     >> "$OUT/build.log" 2>&1
  rc=$?
  # why the libraries come out with a static libstdc++ here (not established; see docs/performance.md)
  grep -E "^CMAKE_(CXX|CUDA|SHARED_LINKER|EXE_LINKER)_FLAGS[:=]" "$B/cmake-build-cuda/CMakeCache.txt" >> "$OUT/build.log" 2>&1
  echo "llama.cpp CUDA build: exit $rc, $(( $(date +%s) - t0 )) s (configure + build, -j16, sm_90)" | tee -a "$OUT/build.log"
  [ $rc -eq 0 ] || { tail -30 "$OUT/build.log"; return 1; }
fi
ln -sfn cmake-build-cuda/bin "$B/bin"          # llama_tools.tool_dir(): llama-quantize, -perplexity, -imatrix
export LLAMA_CPP_LIB_PATH=$B/bin                # the bindings load libllama.so (and ggml-cuda) from here
export PYTHONPATH=$PYTHONPATH:$B/src/vendor/llama.cpp/gguf-py   # gguf.GGUFReader, from the same tree

llama_cuda_pack() {  # the built libraries and tools, xz'd in 15 MiB parts, to $OUT (carry them back in $CARRY)
  (cd "$B" && tar cf - cmake-build-cuda/bin) | xz -T16 -6 | split -b 15M -d - "$OUT/cuda-bin.tar.xz.part"
  ls -la "$OUT"/cuda-bin.tar.xz.part*
}
