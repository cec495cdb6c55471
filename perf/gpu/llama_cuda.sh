#!/usr/bin/env bash
# The GGUF path on the GPU: llama.cpp built with CUDA from the same source tree as the CPU build
# (llama-cpp-python 0.3.36's vendor/llama.cpp), then tests/gpu/test_gpu_llamacpp.py through the module
# code. Runs on the lent GPU machine from the repository root, .llcarry and .gpucarry carried:
#
#   bash perf/gpu/llama_cuda.sh     # $OUT: build.log, fixcheck.log, llamacpp.log, llamacpp.json
#
# The carried files and the build: perf/gpu/llama_cuda_env.sh (a build carried back from an earlier
# call in .llcarry/cuda-bin.tar.xz.part* is used as is). First a short check, on the toy GGUF, that
# the load crash diagnosed by perf/gpu/llama_cuda_diag.sh is gone with silentzone imported first
# (silentzone/_native.py), then the full-size test (LLAMA_TEST_TIMEOUT, default 420 s).
set -uo pipefail
source perf/gpu/llama_cuda_env.sh || exit 1
F=$OUT/fixcheck.log
{
  python3 -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "gpu offload:", llama_cpp.llama_supports_gpu_offload())'
  echo "--- why every llama.cpp library carries its own libstdc++ (the toolchain's view)"
  echo "g++ $(g++ -dumpfullversion): libstdc++.so -> $(g++ -print-file-name=libstdc++.so), libstdc++.a -> $(g++ -print-file-name=libstdc++.a)"
  ls -la "$(dirname "$(g++ -print-file-name=libstdc++.a)")"/libstdc++* 2>&1 | head -5
  env | grep -E "^(LDFLAGS|CXXFLAGS|CFLAGS|CUDAFLAGS|NVCC_.*|CC|CXX)=" ; g++ -dumpspecs | grep -n "static-libstdc" | head -3
  for f in libggml-base.so libggml-cuda.so libllama.so; do
    echo "$f NEEDED: $(readelf -d "$B/bin/$f" | grep NEEDED | grep -o '\[.*\]' | tr '\n' ' ')"
  done
} > "$F" 2>&1
gcc -O1 -shared -fPIC -o /tmp/segv_bt.so perf/gpu/segv_bt.c 2>/dev/null
TOY=$CARRY/toy-f16.gguf
check() {  # label, VAR=value..., case
  local label=$1 case=${@: -1}
  local vars=("${@:2:$#-2}")
  echo "=== $label" >> "$F"
  env "${vars[@]}" LD_PRELOAD=/tmp/segv_bt.so${PRE:+:$PRE} timeout 120 python3 -X faulthandler \
    perf/gpu/llama_diag.py "$case" "$TOY" 2>&1 | grep -v "^\s*$" | cut -c1-400 | head -60 >> "$F"
  echo "=== $label: exit ${PIPESTATUS[0]}" | tee -a "$F"
}
check "torch_cuda, no fix (the crash)" SILENTZONE_NO_GLOBAL_LIBSTDCXX=1 torch_cuda
check "torch_cuda, fix" DIAG_FIX=1 torch_cuda
check "llama_first, fix" DIAG_FIX=1 llama_first
check "import_first, fix" DIAG_FIX=1 import_first
check "ours (silentzone's path, fix)" DIAG_FIX=1 ours
PRE=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}') check "torch_cuda, LD_PRELOAD=libstdc++.so.6 instead" SILENTZONE_NO_GLOBAL_LIBSTDCXX=1 torch_cuda

export SILENTZONE_LLAMA_REPORT=$OUT/llamacpp.json
LD_PRELOAD=/tmp/segv_bt.so timeout ${LLAMA_TEST_TIMEOUT:-420} python3 -X faulthandler -m pytest -q -m gpu \
  tests/gpu/test_gpu_llamacpp.py -s -p no:cacheprovider 2>&1 | grep -v "it/s\]$" | tee "$OUT/llamacpp.log"
rc=${PIPESTATUS[0]}
echo "full test: exit $rc" | tee -a "$OUT/llamacpp.log"
grep -q "segv_bt: signal" "$OUT/llamacpp.log" && python3 perf/gpu/llama_diag.py symbolize "$OUT/llamacpp.log" >> "$OUT/llamacpp.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/llamacpp.log"
exit $rc
