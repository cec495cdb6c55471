#!/usr/bin/env bash
# A powered profile on the lent GPU machine (issue 19), over consecutive calls of one warm machine,
# from the repository root there; the carries come from perf/gpu/power_carry.sh:
#
#   bash perf/gpu/power_run.sh tree    # carry .pw1: unpack the llama.cpp tree, start its CUDA build
#                                      #   in the background (about 5 min on 16 cores), check imports
#   bash perf/gpu/power_run.sh pkgs    # carry .pw2: unpack the package folders
#   bash perf/gpu/power_run.sh part    # carry .pw3, .pw4, ...: keep the model parts they hold
#   bash perf/gpu/power_run.sh scaling ARGS  # perf/gpu/bench_scaling.py ARGS (jobs on the GPU vs CPU)
#   bash perf/gpu/power_run.sh py SCRIPT ARGS  # after a run: python3 SCRIPT ARGS here (e.g.
#                                      #   perf/item_scoring.py --device cuda --out $OUT)
#   bash perf/gpu/power_run.sh wheels [smoke]  # a wheels carry (power_carry.sh WHEELS=1; one call
#                                      #   each, at any time): pip installs its wheels offline
#                                      #   into $PK, then one import line per method, OK or the error;
#                                      #   smoke: every method on a tiny random Llama on the GPU too
#   bash perf/gpu/power_run.sh run ARGS  # (the last part may come with it) assemble and check the
#                                      #   model, wait for the build, then perf/gpu/power_run.py ARGS
#                                      #   (resumable: later calls continue). The CUDA build is not
#                                      #   carried back: packed, it exceeded a call's 16 MiB per file
#                                      #   (lease 4), and it builds while the other calls run
#
# SILENTZONE_HOME is the development machine's path, so that the job markers packed into $OUT name
# paths that hold where they are unpacked.
set -uo pipefail
phase=${1:?tree, pkgs, part, run, py, scaling or wheels}; shift
OUT=${OUT:-/tmp/power-out}; mkdir -p "$OUT"
export SILENTZONE_HOME=${SILENTZONE_HOME:-/root/.cache/silentzone}
tag=cp$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
B=$SILENTZONE_HOME/build/llama-cpp-python-0.3.36-$tag
PK=${PWPKGS:-/root/pwpkgs}  # the carried packages (PWPKGS: elsewhere, for the tests)
export PYTHONPATH=$PK:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore LLAMA_CPP_LIB_PATH=$B/bin
mkdir -p "$B" "$PK"
imports() {
  python3 - <<'EOF'
import importlib, sys
need = "numpy pandas pyarrow scipy statsmodels yaml tqdm jinja2 safetensors sentencepiece tokenizers transformers accelerate torch diskcache gguf".split()
missing = []
for m in need:
    try:
        mod = importlib.import_module(m); print(f"{m} {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        missing.append(m); print(f"{m} MISSING ({type(e).__name__}: {e})")
print("python", sys.version.split()[0], "missing:", " ".join(missing) or "none")
EOF
}
case $phase in
tree)
  [ -d "$B/src/vendor" ] || tar xJf .pw1/llama-src.tar.xz -C "$B"
  mkdir -p /root/pwmodel && cp .pw1/model.part* /root/pwmodel/
  if [ ! -x "$B/cmake-build-cuda/bin/llama-quantize" ]; then
    setsid nohup bash -c "t0=\$(date +%s); cmake -S '$B/src/vendor/llama.cpp' -B '$B/cmake-build-cuda' -G Ninja \
      -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON \
      -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DGGML_CCACHE=OFF \
      && cmake --build '$B/cmake-build-cuda' -j16 --target llama llama-perplexity llama-quantize llama-imatrix; \
      echo \"build exit \$? in \$(( \$(date +%s) - t0 )) s\" > '$B/build.done'" > "$B/build.log" 2>&1 < /dev/null &
    echo "CUDA build started in the background"
  fi
  imports; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; df -h /root | tail -1
  ;;
pkgs)
  tar xJf .pw2/pkgs.tar.xz -C "$PK" && cp .pw2/model.* /root/pwmodel/ && echo "packages unpacked: $(ls $PK | tr '\n' ' ')"
  imports | tail -3; tail -2 "$B/build.log"
  ;;
part)
  cp .pw[0-9]*/model.part* /root/pwmodel/ 2>/dev/null
  echo "model parts here: $(ls /root/pwmodel | grep -c "^model.part[0-9]") of $(cat /root/pwmodel/model.nparts)"; tail -1 "$B/build.log"
  ;;
run)
  cp .pw[0-9]*/model.part* /root/pwmodel/ 2>/dev/null
  dest=$(cat /root/pwmodel/model.dest)
  case $dest in
    pkgs:*) file=$PK/${dest#pkgs:} ;;
    home:*) file=$SILENTZONE_HOME/${dest#home:} ;;
    *) echo "power_run.sh: model.dest $dest: expected pkgs:PATH or home:PATH"; exit 3 ;;
  esac
  if [ ! -f "$file" ]; then
    have=$(ls /root/pwmodel | grep -c "^model.part[0-9]"); need=$(cat /root/pwmodel/model.nparts)
    [ "$have" = "$need" ] || { echo "power_run.sh: $have of $need model parts here (carry the rest: part)"; exit 3; }
    mkdir -p "$(dirname "$file")"
    cat /root/pwmodel/model.part* > "$file.tmp"
    if [ "$(sha256sum "$file.tmp" | cut -d' ' -f1)" != "$(cat /root/pwmodel/model.sha256)" ]; then
      echo "power_run.sh: $file: sha256 differs from the development machine's"; exit 3
    fi
    mv "$file.tmp" "$file" && echo "model $file assembled, sha256 ok"
  fi
  for r in .pw[0-9]*/resume.tar.xz; do  # an earlier lease's finished quants (power_carry.sh RESUME=)
    [ -f "$r" ] && python3 perf/gpu/power_resume.py "$r" "$SILENTZONE_HOME"
  done
  t0=$(date +%s)
  while [ ! -f "$B/build.done" ]; do sleep 2; [ $(( $(date +%s) - t0 )) -gt 420 ] && { echo "build not done"; tail -5 "$B/build.log"; exit 4; }; done
  echo "waited $(( $(date +%s) - t0 )) s for the build: $(cat "$B/build.done")"
  cp "$B/build.log" "$OUT/build.log" 2>/dev/null
  grep -q "exit 0" "$B/build.done" || { tail -30 "$B/build.log"; exit 5; }
  ln -sfn cmake-build-cuda/bin "$B/bin"
  waited=$(( $(date +%s) - t0 ))  # the call's 600 s: what the build wait left
  python3 perf/gpu/power_run.py --out "$OUT" --deadline $(( ${BUDGET:-500} - waited )) \
    --hard $(( ${BUDGET:-500} + 40 - waited )) --build-wait "$waited" "$@"
  ;;
py)  # after a run (the build done): a script in this environment, e.g. perf/item_scoring.py --device cuda
  ln -sfn cmake-build-cuda/bin "$B/bin"
  python3 "$@"
  ;;
scaling)  # after a run with --stages reference quant bench-reference: perf/gpu/bench_scaling.py ARGS
  ln -sfn cmake-build-cuda/bin "$B/bin"
  python3 perf/gpu/bench_scaling.py --out "$OUT" "$@"
  ;;
wheels)  # .pwN/wheels/*.whl (power_carry.sh WHEELS=1): installed offline into $PK, beside the carried
         # package folders; a later call with other wheels adds to them (--upgrade: one sent again replaces)
  smoke=${1:-}
  # a wheel over a carry's room comes in parts over consecutive calls (power_wheels.py plan): they
  # wait in $PK-parts until the last has come, then go in whole
  PARTS=$PK-parts; mkdir -p "$PARTS"
  ls .pw[0-9]*/wheels/*.whl* > /dev/null 2>&1 || { echo "power_run.sh: no .pw*/wheels/*.whl in this call (power_carry.sh WHEELS=1)"; exit 3; }
  cp .pw[0-9]*/wheels/*.whl.part* "$PARTS"/ 2> /dev/null
  whls=$(ls .pw[0-9]*/wheels/*.whl 2> /dev/null; python3 perf/gpu/power_wheels.py join "$PARTS")
  waiting=$(ls "$PARTS" | grep '\.part' | tr '\n' ' ')
  [ -z "$waiting" ] || echo "parts waiting for the rest: $waiting"
  t0=$(date +%s); prc=0
  if [ -z "$whls" ]; then
    :
  elif python3 -m pip --version > /dev/null 2>&1; then
    log=$(python3 -m pip install --no-deps --no-index --upgrade --disable-pip-version-check -q --target "$PK" \
      $whls 2>&1); prc=$?
    echo "$log" | grep -v "WARNING: Running pip as\|^$"
  else  # no pip there: a wheel is a zip of site-packages' layout (with its dist-info for the versions)
    python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$PK" $whls; prc=$?
  fi
  echo "installed into $PK in $(( $(date +%s) - t0 )) s (exit $prc):" $(for w in $whls; do basename "$w"; done | cut -d- -f1-2)
  python3 perf/gpu/power_wheels.py check; rc=$?
  [ "$prc" = 0 ] || rc=4
  if [ "$smoke" = smoke ]; then python3 perf/gpu/power_wheels.py smoke cuda || rc=$?; fi
  exit $rc
  ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
