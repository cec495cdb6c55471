"""Shared by the CPU performance scripts: the machine header, interleaved timing, inputs, result files.

Every script measures a ratio of two ways of doing the same work in one process, their
repetitions interleaved (A B B A ...), and reports the median of the per-pair ratios: on a shared,
noisy machine the absolute times drift, the ratio of neighbours does not.

A result file (perf/cpu/<name>.json) holds {"name", "title", "header", "rows", "notes"}; a row is
{"metric", "value", "target", "op", "pass", "unit", "detail"} with op one of "<=", ">=" (None: info).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for the child processes
warnings.filterwarnings("ignore")  # bitsandbytes warns once per matmul

PERF = Path(__file__).resolve().parent
REPO = PERF.parent
OUT = PERF / "cpu"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# One thread by default: on a shared 2-core machine llama.cpp's threads spin at barriers while the
# other is descheduled (4 minutes of CPU for 2 of wall measured here under load 7); set
# SILENTZONE_PERF_THREADS=2 on a quiet machine. Every ratio compares like with like at this count.
THREADS = int(os.environ.get("SILENTZONE_PERF_THREADS", "1"))
MODEL = "embedded:smollm2-135m-instruct"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header() -> dict:
    """Machine, load, versions and date of a run."""
    import importlib.metadata as md
    vers = {"python": platform.python_version()}
    for p in ("torch", "transformers", "numpy", "llama_cpp_python", "bitsandbytes"):
        try:
            vers[p] = md.version(p)
        except md.PackageNotFoundError:
            vers[p] = None
    try:
        import subprocess
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - a header never stops a measurement
        commit = ""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": THREADS,
            "loadavg": [round(x, 2) for x in os.getloadavg()], "versions": vers,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit}


def interleave(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Time each callable of `fns` (name -> f()) `reps` times, interleaved: the order of the names
    is reversed on every other round (A B, B A, ...) so that a drift in machine speed falls on
    both alike. Returns {name: [seconds per rep]}; `warmup` untimed rounds go first."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out = {n: [] for n in names}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            out[n].append(time.perf_counter() - t0)
    return out


def ratio(times: dict, num: str, den: str) -> float:
    """Median over rounds of times[num][r] / times[den][r] (neighbours in time)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def med(xs) -> float:
    return statistics.median(xs)


def row(metric: str, value, target=None, op: str | None = None, unit: str = "", detail: str = "") -> dict:
    ok = None
    if op == "<=":
        ok = bool(value <= target)
    elif op == ">=":
        ok = bool(value >= target)
    return {"metric": metric, "value": value, "target": target, "op": op, "pass": ok, "unit": unit,
            "detail": detail}


def write(name: str, title: str, rows: list[dict], notes: list[str] = (), out_dir: Path = OUT,
          extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"name": name, "title": title, "header": header(), "rows": rows, "notes": list(notes),
           **(extra or {})}
    p = out_dir / f"{name}.json"
    p.write_text(json.dumps(res, indent=2, default=float) + "\n")
    for r in rows:
        print(format_row(r), flush=True)
    return p


def format_row(r: dict) -> str:
    v = r["value"]
    vs = f"{v:.5g}" if isinstance(v, float) else str(v)
    tgt = f" (target {r['op']} {r['target']}: {'pass' if r['pass'] else 'MISS'})" if r["op"] else ""
    det = f"  [{r['detail']}]" if r["detail"] else ""
    return f"  {r['metric']}: {vs}{r['unit']}{tgt}{det}"


def args(doc: str, **extra) -> argparse.Namespace:
    """--quick (tiny sizes, for the tests), --out (result folder), plus script-specific options."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the result JSON")
    for k, v in extra.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    return ap.parse_args()


# ----------------------------------------------------------------------------- inputs

def reference():
    from silentzone.models import resolve
    return resolve(MODEL)


def corpus_ids(n_tokens: int, corpus: str = "wiki"):
    from silentzone.fidelity.corpora import corpus_tokens
    return corpus_tokens(reference(), corpus, n_tokens)[0]


def gguf_quant(qtype: str, work: Path) -> Path:
    """A GGUF quant of the reference: the cached study artifact when there is one, else made with
    llama.cpp's quantizer (about a second) into `work`."""
    from silentzone.paths import cache_home
    ref = reference()
    d = cache_home() / "quants" / ref.gguf.parent.name
    for a in sorted(d.glob(f"{qtype}-*/model.gguf")):
        if a.parent.name.rsplit("-", 1)[0] == qtype:
            return a
    import llama_cpp
    out = Path(work) / f"{qtype}.gguf"
    if not out.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
        params.nthread = THREADS
        rc = llama_cpp.llama_model_quantize(str(ref.gguf).encode(), str(out).encode(), params)
        if rc != 0:
            raise RuntimeError(f"quantizing {qtype} failed ({rc})")
    return out


def cached_artifact(quant_id: str) -> Path | None:
    """The cached study artifact directory of a quant id (e.g. bnb-int8), or None."""
    from silentzone.paths import cache_home
    d = cache_home() / "quants" / reference().gguf.parent.name
    for a in sorted(d.glob(f"{quant_id}-*/artifact.json")):
        if a.parent.name.rsplit("-", 1)[0] == quant_id:
            return a.parent
    return None


def tiny_models(work: Path) -> tuple[Path, Path]:
    """Two tiny random Llamas with SmolLM2's tokenizer and vocabulary (the tests' fixture)."""
    from silentzone.testing import make_tiny_llama
    ref = reference()
    a, b = Path(work) / "tiny-0", Path(work) / "tiny-1"
    if not (a / "config.json").is_file():
        make_tiny_llama(a, ref.hf_dir, seed=0)
    if not (b / "config.json").is_file():
        make_tiny_llama(b, ref.hf_dir, seed=1)
    return a, b


def work_dir(name: str) -> Path:
    """A scratch folder for stores, quants and text files (removed by nobody: reruns reuse it)."""
    from silentzone.paths import cache_home
    d = cache_home() / "perf" / name
    d.mkdir(parents=True, exist_ok=True)
    return d
