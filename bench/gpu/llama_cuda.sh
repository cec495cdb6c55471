#!/usr/bin/env bash
# llama.cpp built with CUDA from the same source tree as the CPU build (llama-cpp-python 0.3.36's
# vendor/llama.cpp), then the GGUF path on the GPU through the module code
# (tests/gpu/test_gpu_llamacpp.py). Runs on the lent GPU machine from the repository root:
#
#   bash bench/gpu/llama_cuda.sh            # $OUT receives the logs and the JSON report
#
# It needs, in .llcarry/ (carried; made on the development machine, see bench/RESULTS.md "GPU"):
#   llama-src.tar.xz   the sdist's tree trimmed to what the build and the converter need (4.4 MB)
#   llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl   the bindings alone (built with
#                      CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"), pointed at the CUDA
#                      libraries through LLAMA_CPP_LIB_PATH
#   diskcache-5.6.3-py3-none-any.whl                    a dependency of the bindings
# and .gpucarry/pkgs (the wiki calibration text, laid out as the exllamav3 package folder).
set -uo pipefail
OUT=${OUT:-/tmp/llama-cuda-out}
mkdir -p "$OUT"
CARRY=${CARRY:-.llcarry}
export SILENTZONE_HOME=${SILENTZONE_HOME:-/root/szgpu}
tag=cp$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
B=$SILENTZONE_HOME/build/llama-cpp-python-0.3.36-$tag   # where silentzone.llama_tools looks
mkdir -p "$B"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpucarry/pkgs:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
[ -d "$B/src" ] || tar xJf "$CARRY/llama-src.tar.xz" -C "$B"
if [ ! -x "$B/cmake-build-cuda/bin/llama-perplexity" ]; then
  t0=$(date +%s)
  cmake -S "$B/src/vendor/llama.cpp" -B "$B/cmake-build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DGGML_CCACHE=OFF > "$OUT/build.log" 2>&1 \
  && cmake --build "$B/cmake-build-cuda" -j16 --target llama llama-perplexity llama-quantize llama-imatrix \
     >> "$OUT/build.log" 2>&1
  rc=$?
  echo "llama.cpp CUDA build: exit $rc, $(( $(date +%s) - t0 )) s (configure + build, -j16, sm_90)" | tee -a "$OUT/build.log"
  [ $rc -eq 0 ] || { tail -30 "$OUT/build.log"; exit 1; }
fi
ln -sfn cmake-build-cuda/bin "$B/bin"          # llama_tools.tool_dir(): llama-quantize, -perplexity, -imatrix
export LLAMA_CPP_LIB_PATH=$B/bin                # the bindings load libllama.so (and ggml-cuda) from here
python3 - <<'PY' 2>&1 | tee -a "$OUT/build.log"
import llama_cpp, subprocess, os
print("llama_cpp", llama_cpp.__version__, "gpu offload:", llama_cpp.llama_supports_gpu_offload())
print(subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1])
PY
export PYTHONPATH=$PYTHONPATH:$B/src/vendor/llama.cpp/gguf-py   # gguf.GGUFReader, from the same tree
T="python3 -m pytest -q -m gpu tests/gpu/test_gpu_llamacpp.py -s -p no:cacheprovider"
# toy size first (a minute): a crash there is debugged (C backtrace) instead of costing the full run
SILENTZONE_LLAMA_SIZE=toy SILENTZONE_LLAMA_REPORT=/tmp/llamacpp_toy.json $T > "$OUT/llamacpp_toy.log" 2>&1
rc=$?
echo "toy run: exit $rc" | tee -a "$OUT/llamacpp_toy.log"
if [ $rc -ge 128 ] || grep -q "Segmentation fault" "$OUT/llamacpp_toy.log"; then
  SILENTZONE_LLAMA_SIZE=toy SILENTZONE_LLAMA_REPORT=/tmp/llamacpp_toy.json timeout 240 cuda-gdb -q -batch \
    -ex "set pagination off" -ex run -ex bt -ex "info sharedlibrary" --args $T 2>&1 \
    | grep -v "^\[New Thread\|^\[Thread\|it/s\]$" | tail -150 >> "$OUT/llamacpp_toy.log"
  exit 1
fi
export SILENTZONE_LLAMA_REPORT=$OUT/llamacpp.json
timeout ${LLAMA_TEST_TIMEOUT:-300} $T 2>&1 | grep -v "it/s\]$" | tee "$OUT/llamacpp.log"
