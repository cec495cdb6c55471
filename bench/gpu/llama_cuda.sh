#!/usr/bin/env bash
# llama.cpp built with CUDA from the same source tree as the CPU build (llama-cpp-python 0.3.36's
# vendor/llama.cpp), then the GGUF path on the GPU through the module code
# (tests/gpu/test_gpu_llamacpp.py). Runs on the lent GPU machine from the repository root:
#
#   bash bench/gpu/llama_cuda.sh            # $OUT receives the logs and the JSON report
#
# The carried files it needs and the build: bench/gpu/llama_cuda_env.sh.
set -uo pipefail
source bench/gpu/llama_cuda_env.sh || exit 1
python3 - <<'PY' 2>&1 | tee -a "$OUT/build.log"
import llama_cpp, subprocess, os
print("llama_cpp", llama_cpp.__version__, "gpu offload:", llama_cpp.llama_supports_gpu_offload())
print(subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1])
PY
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
