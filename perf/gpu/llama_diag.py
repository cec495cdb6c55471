"""One case of the llama.cpp-on-CUDA load diagnosis (perf/gpu/llama_cuda_diag.sh runs each case in
its own process): which order of torch and llama.cpp, in one process, lets a GGUF model load with
every layer offloaded and decode.

    python3 perf/gpu/llama_diag.py CASE model.gguf

Cases:
  nolib          llama_cpp alone, torch never imported
  torch_import   `import torch` (its CUDA libraries loaded, CUDA untouched), then the load
  torch_cuda     torch.zeros(1, device="cuda") first, then the load (the test's order)
  llama_first    model loaded and decoding before torch touches CUDA; then torch on CUDA, a decode
                 with the first model and a second model loaded
  import_first   `import llama_cpp` (libllama, libggml-cuda and their CUDA libraries loaded) before
                 torch is imported; torch on CUDA; then the load
  ours           the module path: torch on CUDA, a thread polling torch.cuda.mem_get_info (as the
                 test's GpuPeak), silentzone.backends.open_model(device="cuda"), llama_logits into a
                 CUDA tensor
Prints the CUDA-related shared objects mapped in the process before the load, then OK or the crash.
DIAG_VERBOSE=1 lets llama.cpp log (verbose=True). DIAG_FIX=1 imports silentzone first, whose
__init__ puts the shared libstdc++ in the global symbol scope (silentzone/_native.py, the fix); case
"ours" imports silentzone anyway (SILENTZONE_NO_GLOBAL_LIBSTDCXX=1 turns the fix off).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

CASE, GGUF = sys.argv[1], sys.argv[2]
if CASE == "symbolize":  # segv_bt frames of a log (GGUF is then the log): offsets resolved by addr2line
    import shutil
    import subprocess
    frame = re.compile(r"^(/\S+?)\(([^)+]*)\+(0x[0-9a-f]+)\)\[(0x[0-9a-f]+)\]")
    have = shutil.which("addr2line")
    for line in open(GGUF, errors="replace"):
        m = frame.match(line.strip())
        if not m:
            continue
        lib, sym, off, _ = m.groups()
        if sym:
            name = subprocess.run(["c++filt", sym], capture_output=True, text=True).stdout.strip() if shutil.which("c++filt") else sym
            print(f"{os.path.basename(lib)}: {name} +{off}")
        elif have:
            r = subprocess.run(["addr2line", "-Cfpe", lib, off], capture_output=True, text=True).stdout.strip()
            print(f"{os.path.basename(lib)}+{off}: {r}")
        else:
            print(f"{os.path.basename(lib)}+{off}")
    raise SystemExit(0)
VERBOSE = os.environ.get("DIAG_VERBOSE") == "1"
IDS = list(range(1, 101))


def say(*a):
    print(f"[{CASE}]", *a, flush=True)


def maps(tag: str) -> None:
    """The CUDA, cuBLAS, ggml, llama and torch-CUDA shared objects mapped now (one line each)."""
    seen = []
    pat = re.compile(r"(cudart|cublas|libcuda\.so|nvrtc|nvJitLink|ggml|llama|torch_cuda|c10_cuda)")
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1] if len(line.split()) >= 6 else ""
            if pat.search(p) and p not in seen:
                seen.append(p)
    say(f"maps {tag}: " + (" ".join(seen) or "(none)"))


def load(n_ctx: int = 256):
    import llama_cpp
    t0 = time.perf_counter()
    say("loading, n_gpu_layers=-1 ...")
    m = llama_cpp.Llama(GGUF, n_gpu_layers=-1, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                        logits_all=True, verbose=VERBOSE, seed=0)
    say(f"loaded in {time.perf_counter() - t0:.2f} s")
    return m


def decode(m, out=None):
    sys.path.insert(0, os.getcwd())
    from silentzone.logits import llama_logits
    x = llama_logits(m, IDS, out=out)
    import numpy as np
    v = x if isinstance(x, np.ndarray) else x.float().cpu().numpy()
    say(f"decoded {len(IDS)} tokens: logits {tuple(v.shape)}, finite {bool(np.isfinite(v).all())}, "
        f"sum {float(v.sum()):.4g}")


def torch_cuda():
    import torch
    torch.zeros(1, device="cuda")
    say(f"torch {torch.__version__} on CUDA: {torch.cuda.get_device_name()} "
        f"(torch's CUDA runtime {torch.version.cuda})")


if os.environ.get("DIAG_FIX") == "1":
    sys.path.insert(0, os.getcwd())
    import silentzone  # noqa: F401 - the fix: one libstdc++ for the process
    say("fix: silentzone imported first, global", silentzone._native.GLOBAL_LIBSTDCXX)
maps("at start")
if CASE == "nolib":
    import llama_cpp
    say("gpu offload:", llama_cpp.llama_supports_gpu_offload())
    maps("after import llama_cpp")
    decode(load())
elif CASE == "torch_import":
    import torch  # noqa: F401
    maps("after import torch")
    decode(load())
elif CASE == "torch_cuda":
    torch_cuda()
    maps("after torch on CUDA")
    decode(load())
elif CASE == "llama_first":
    m = load()
    decode(m)
    maps("after the first load")
    torch_cuda()
    decode(m)
    m2 = load()
    decode(m2)
elif CASE == "import_first":
    import llama_cpp  # noqa: F401
    maps("after import llama_cpp")
    torch_cuda()
    maps("after torch on CUDA")
    decode(load())
elif CASE == "ours":
    import torch
    torch_cuda()
    stop = False
    peak = [0]

    def poll():
        while not stop:
            free, total = torch.cuda.mem_get_info()
            peak[0] = max(peak[0], total - free)
            time.sleep(0.005)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    sys.path.insert(0, os.getcwd())
    from silentzone.backends import open_model
    maps("before open_model")
    m = open_model(GGUF, device="cuda", n_ctx=256, name="diag")
    say("open_model OK")
    out = torch.empty(len(IDS), m.vocab_size, device="cuda")
    decode(m.llm, out=out)
    stop = True
    t.join()
    say(f"peak GPU memory in use {peak[0] / 2**30:.2f} GiB")
else:
    raise SystemExit(f"unknown case {CASE}")
say("OK")
