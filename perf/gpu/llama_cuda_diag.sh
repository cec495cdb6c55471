#!/usr/bin/env bash
# Why does a GGUF model with every layer offloaded crash at load in our process? One call on the lent
# GPU machine (repository root, .llcarry carried):
#
#   bash perf/gpu/llama_cuda_diag.sh     # $OUT: diag.log, gdb.log, build.log, cuda-bin.tar.xz.part*
#
# Builds llama.cpp with CUDA (perf/gpu/llama_cuda_env.sh), packs the build to $OUT (carry it back as
# .llcarry/cuda-bin.tar.xz.part* so a later call needn't rebuild), then on a toy GGUF carried in
# .llcarry/toy-f16.gguf (2 layers, vocabulary 4,096; made by perf/gpu/llama_diag.py's neighbour in
# tests/gpu) and .llcarry/toy-wiki.txt:
#   (a) llama-perplexity -ngl 999 (no Python), with --kl-divergence-base / --kl-divergence
#   (b..) perf/gpu/llama_diag.py, one process per case: nolib, torch_import, torch_cuda, llama_first,
#       import_first, ours (each under a SIGSEGV backtrace shim, perf/gpu/segv_bt.c, symbolized)
#   then the toy GGUF test (tests/gpu/test_gpu_llamacpp.py, SILENTZONE_LLAMA_SIZE=toy) under the shim,
#   and (e) cuda-gdb -batch -ex run -ex bt on the first crashing case, its whole output in gdb.log.
# DIAG_DEADLINE (s since start, default 570) stops the optional parts in time.
set -uo pipefail
source perf/gpu/llama_cuda_env.sh || exit 1
DEADLINE=${DIAG_DEADLINE:-570}
D=$OUT/diag.log
left() { echo $(( DEADLINE - SECONDS )); }
sec() { echo; echo "=================== $* (t=${SECONDS}s)"; } >> "$D"
[ -f "$OUT/cuda-bin.tar.xz.part00" ] || [ -n "${NO_PACK:-}" ] || llama_cuda_pack >> "$D" 2>&1
TOY=$CARRY/toy-f16.gguf TXT=$CARRY/toy-wiki.txt
BIN=$B/cmake-build-cuda/bin

sec environment
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  python3 - <<'PY'
import torch, importlib.metadata as md
print("torch", torch.__version__, "cuda", torch.version.cuda)
for p in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cuda-nvrtc", "torchvision", "cuda-toolkit"):
    try:
        print(p, md.version(p))
    except Exception as e:
        print(p, "-", type(e).__name__)
PY
  ls -la "$BIN"
  echo "--- readelf -d libggml-cuda.so (NEEDED, RUNPATH)"; readelf -d "$BIN/libggml-cuda.so" | grep -E "NEEDED|RUNPATH|RPATH"
  echo "--- ldd libggml-cuda.so"; ldd "$BIN/libggml-cuda.so"
  echo "--- cudart symbols defined inside libggml-cuda.so (static runtime if > 0):"
  nm -D --defined-only "$BIN/libggml-cuda.so" 2>/dev/null | grep -c " cuda[A-Z]" || true
  echo "--- CUDA libraries torch ships"; ls /opt/torch/.venv/lib/python3.12/site-packages/nvidia/*/lib 2>/dev/null | grep -E "cudart|cublas" | sort -u
  echo "--- ldconfig: libcudart / libcublas"; ldconfig -p | grep -E "libcudart|libcublas" || true
} >> "$D" 2>&1

sec "(a) llama-perplexity -ngl 999, toy GGUF, no Python"
{
  for mode in base kld; do
    extra=(--kl-divergence-base /tmp/toy.kld); [ $mode = kld ] && extra+=(--kl-divergence)
    timeout 120 "$BIN/llama-perplexity" -m "$TOY" -f "$TXT" -c 128 --chunks 8 -ngl 999 "${extra[@]}" > /tmp/ppl_$mode.log 2>&1
    echo "llama-perplexity $mode: exit $?"
    grep -E "offload|CUDA0|ggml_cuda_init|Device 0|Final estimate|Mean +KLD|Same top p|seconds per pass|error|fault" /tmp/ppl_$mode.log | head -25
  done
} >> "$D" 2>&1

gcc -O1 -shared -fPIC -o /tmp/segv_bt.so perf/gpu/segv_bt.c >> "$D" 2>&1
first_crash=""
for c in nolib torch_import torch_cuda llama_first import_first ours; do
  sec "case $c"
  LD_PRELOAD=/tmp/segv_bt.so timeout 120 python3 -X faulthandler perf/gpu/llama_diag.py $c "$TOY" > /tmp/case_$c.log 2>&1
  rc=$?
  grep -v "^\s*$" /tmp/case_$c.log | head -120 >> "$D"
  echo "case $c: exit $rc" | tee -a "$D"
  if grep -q "segv_bt: signal" /tmp/case_$c.log; then
    echo "--- symbolized" >> "$D"; python3 perf/gpu/llama_diag.py symbolize /tmp/case_$c.log >> "$D" 2>&1
  fi
  [ $rc -ne 0 ] && [ -z "$first_crash" ] && first_crash=$c
done
echo "first failing case: ${first_crash:-none}" | tee -a "$D"
if [ -n "$first_crash" ]; then
  sec "case $first_crash again, llama.cpp verbose"
  DIAG_VERBOSE=1 timeout 120 python3 -X faulthandler perf/gpu/llama_diag.py $first_crash "$TOY" 2>&1 | grep -v "^\s*$" | tail -80 >> "$D"
fi

if [ "$(left)" -gt 150 ]; then
  sec "toy GGUF test (tests/gpu/test_gpu_llamacpp.py) under the shim"
  LD_PRELOAD=/tmp/segv_bt.so SILENTZONE_LLAMA_SIZE=toy SILENTZONE_LLAMA_REPORT=/tmp/llamacpp_toy.json \
    timeout $(( $(left) - 100 )) python3 -X faulthandler -m pytest -q -m gpu tests/gpu/test_gpu_llamacpp.py -s \
    -p no:cacheprovider > /tmp/toytest.log 2>&1
  rc=$?
  grep -v "it/s\]$" /tmp/toytest.log | tail -120 >> "$D"
  echo "toy test: exit $rc" | tee -a "$D"
  grep -q "segv_bt: signal" /tmp/toytest.log && { echo "--- symbolized" >> "$D"; python3 perf/gpu/llama_diag.py symbolize /tmp/toytest.log >> "$D" 2>&1; }
  cp /tmp/llamacpp_toy.json "$OUT/llamacpp_toy.json" 2>/dev/null
fi

if [ -n "$first_crash" ] && [ "$(left)" -gt 40 ]; then
  sec "(e) cuda-gdb on case $first_crash -> gdb.log"
  timeout $(( $(left) - 15 )) cuda-gdb -q -batch -ex "set pagination off" -ex "set print thread-events off" \
    -ex "set cuda break_on_launch none" -ex run -ex bt -ex "info threads" -ex "thread apply all bt 12" \
    --args python3 perf/gpu/llama_diag.py $first_crash "$TOY" > "$OUT/gdb.log" 2>&1
  echo "cuda-gdb: exit $?" | tee -a "$D"
  grep -n -A40 "received signal" "$OUT/gdb.log" | head -60 >> "$D"
fi
sec done
