"""The wheels of the quant methods other than GGUF, for the lent GPU machine (perf/gpu/wheels.txt).

Here (perf/gpu/power_carry.sh with WHEELS=1):
    python perf/gpu/power_wheels.py carry FIRST TREE_BYTES   # download the pinned wheels (cp312),
                                      # fill .pwFIRST/wheels/, .pw<FIRST+1>/wheels/, ... in list order
There (perf/gpu/power_run.sh wheels, after pip has put the carried wheels into $PK):
    python3 perf/gpu/power_wheels.py join FOLDER    # the wheels whose parts (a wheel over a carry's
                                      # room travels split, plan) have all come, put back together
    python3 perf/gpu/power_wheels.py check          # one line per method: OK or the first error
    python3 perf/gpu/power_wheels.py smoke [DEVICE]  # each method on a tiny random Llama (default cuda)

A carry holds the tracked tree too (TREE_BYTES), under 64 MiB in all. The carries are filled in the
list's order, a new one when the next wheel does not fit: the list puts a package after those it
needs, so every prefix of the carries installs packages whose dependencies came with or before them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

LIST = Path(__file__).with_name("wheels.txt")
LIMIT = 64 * 1024 * 1024
MARGIN = 512 * 1024  # folder entries and the transfer's own bookkeeping
PY = "3.12"  # the lent machine's Python
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
SPEC = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)")

# what each method's code imports (silentzone/quantize/hf.py, silentzone/backends/loadtime.py)
METHODS = {
    "transformers": ["transformers:AutoModelForCausalLM", "transformers:PreTrainedModel"],
    "gptq": ["datasets:Dataset", "compressed_tensors.quantization:QuantizationScheme",
             "llmcompressor:oneshot", "llmcompressor.modifiers.gptq:GPTQModifier"],
    "awq": ["datasets:Dataset", "llmcompressor:oneshot", "llmcompressor.modifiers.transform.awq:AWQModifier",
            "llmcompressor.modifiers.quantization:QuantizationModifier",
            "llmcompressor.pipelines.cache:IntermediatesCache"],
    "bnb": ["transformers:BitsAndBytesConfig", "bitsandbytes.nn:Linear4bit",
            "bitsandbytes.functional:has_avx512bf16"],
    "torchao": ["torchao.quantization:quantize_", "torchao.quantization:Int8WeightOnlyConfig",
                "torchao.quantization:IntxWeightOnlyConfig", "torchao.quantization.granularity:PerGroup"],
    "quanto": ["optimum.quanto:quantize", "optimum.quanto:freeze", "optimum.quanto:qint8"],
    "hqq": ["hqq.core.quantize:HQQLinear", "hqq.core.quantize:BaseQuantizeConfig",
            "hqq.models.hf.base:AutoHQQHFModel"],
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(path: Path = LIST) -> list[tuple[str, str, str]]:
    """(name, version, comment) of every line; a line is `name==version  # who needs it`."""
    out, seen = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if not spec:
            continue
        m = SPEC.fullmatch(spec)
        if not m:
            raise ValueError(f"{path}:{n}: expected name==version, got {spec!r}")
        if not comment.strip():
            raise ValueError(f"{path}:{n}: {spec}: say which method needs it (a # comment)")
        if normalize(m[1]) in seen:
            raise ValueError(f"{path}:{n}: {m[1]} listed twice")
        seen.add(normalize(m[1]))
        out.append((m[1], m[2], comment.strip()))
    return out


PART = re.compile(r"(.+)\.part(\d+)of(\d+)")


def plan(files: list[tuple[str, int]], room: int) -> list[list[str]]:
    """Files (name, bytes) into carries of at most `room` bytes each, in order: a new carry when the
    next file does not fit the current one. A file over `room` (bitsandbytes once the tracked tree
    grew past 23 MB) travels in k = ceil(bytes / room) parts `<name>.part<i>of<k>` of nearly equal
    size (part_range), each placed like a file; `join` puts them back together there."""
    carries, used = [], room
    for name, size in files:
        k = -(-size // room) if size > room else 1
        for i in range(1, k + 1):
            lo, hi = part_range(size, i, k)
            piece = name if k == 1 else f"{name}.part{i}of{k}"
            if used + hi - lo > room:
                carries.append([])
                used = 0
            carries[-1].append(piece)
            used += hi - lo
    return carries


def part_range(size: int, i: int, k: int) -> tuple[int, int]:
    """The bytes [lo, hi) of part i (1-based) of k of a file of `size` bytes."""
    return (i - 1) * size // k, i * size // k


def join(folder: Path) -> list[Path]:
    """Every wheel whose parts (`<name>.part<i>of<k>`, from this call and earlier ones) are all in
    `folder`, put back together as folder/<name> (parts removed); returns those wheels. Parts of a
    wheel still missing some stay for a later call."""
    groups: dict[tuple[str, int], dict[int, Path]] = {}
    for f in Path(folder).iterdir():
        m = PART.fullmatch(f.name)
        if m:
            groups.setdefault((m[1], int(m[3])), {})[int(m[2])] = f
    out = []
    for (name, k), parts in sorted(groups.items()):
        if sorted(parts) != list(range(1, k + 1)):
            continue
        whole = Path(folder) / name
        with open(whole, "wb") as fh:
            for i in range(1, k + 1):
                fh.write(parts[i].read_bytes())
        for f in parts.values():
            f.unlink()
        out.append(whole)
    return out


def download(name: str, version: str, dest: Path) -> Path:
    """The wheel of name==version for the lent machine (cp312 / abi3 / py3-none), into dest; an sdist
    only package is built here into a pure wheel (a platform wheel built here would be cp311)."""
    tmp = Path(tempfile.mkdtemp(dir=dest))
    pip = [sys.executable, "-m", "pip"]
    p = subprocess.run(pip + ["download", "--no-deps", "--only-binary=:all:", "--python-version", PY,
                              *[a for pl in PLATFORMS for a in ("--platform", pl)], "-d", str(tmp),
                              f"{name}=={version}"], capture_output=True, text=True)
    if p.returncode != 0:  # no wheel on the index: build one from the sdist
        subprocess.run(pip + ["download", "--no-deps", "--no-binary=:all:", "-d", str(tmp),
                              f"{name}=={version}"], check=True, capture_output=True, text=True)
        (sdist,) = tmp.iterdir()
        env = {**os.environ, "DISABLE_CUDA": "1"}  # hqq: no CUDA kernel build in egg_info
        subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "w"), str(sdist)],
                       check=True, capture_output=True, text=True, env=env)
        (whl,) = (tmp / "w").glob("*.whl")
        if not whl.name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"power_wheels.py: {whl.name} built from the sdist is not pure Python")
    else:
        (whl,) = tmp.glob("*.whl")
    out = dest / whl.name
    shutil.move(str(whl), out)
    shutil.rmtree(tmp)
    return out


def carry(first: int, tree_bytes: int, root: Path = Path("."), dest: Path = Path("/tmp/pwcarry/wheels"),
          listing: Path = LIST) -> list[Path]:
    """Download every listed wheel (into dest) and spread them over root/.pw<first>/wheels/,
    .pw<first+1>/wheels/, ... in the list's order."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    files = []
    for name, version, _ in parse(listing):
        f = download(name, version, dest)
        files.append((f, f.stat().st_size))
        print(f"  {f.name} {f.stat().st_size / 2**20:.2f} MiB", flush=True)
    by_name = {f.name: f for f, _ in files}
    carries = plan([(f.name, s) for f, s in files], LIMIT - tree_bytes - MARGIN)
    dirs = []
    for i, names in enumerate(carries):
        d = root / f".pw{first + i}" / "wheels"
        d.mkdir(parents=True)
        for n in names:
            m = PART.fullmatch(n)
            if m is None:
                shutil.move(str(by_name[n]), d / n)
                continue
            src = by_name[m[1]]
            lo, hi = part_range(src.stat().st_size, int(m[2]), int(m[3]))
            with open(src, "rb") as fh:
                fh.seek(lo)
                (d / n).write_bytes(fh.read(hi - lo))
        dirs.append(d.parent)
        print(f"{d}: {len(names)} wheels, {sum(p.stat().st_size for p in d.iterdir()) / 2**20:.1f} MiB")
    return dirs


def check() -> int:
    """One line per method: OK, or the first import that fails with its error."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version
    bad = 0
    for method, names in METHODS.items():
        err = None
        for spec in names:
            mod, _, attr = spec.partition(":")
            try:
                getattr(importlib.import_module(mod), attr)
            except Exception as e:  # noqa: BLE001 - reported, the next method is tried
                err = f"{spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                break
        bad += err is not None
        print(f"{method}: {'OK' if err is None else 'FAIL ' + err}", flush=True)
    have = []
    for name, want, _ in parse():
        try:
            v = version(name)
        except PackageNotFoundError:
            v = "absent"
        have.append(f"{name} {v}" + ("" if v == want else f" (want {want})"))
    print("carried:", ", ".join(have))
    shared = []
    for name in ("torch", "transformers", "accelerate", "huggingface_hub", "fsspec", "pyarrow", "numpy"):
        try:
            shared.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            shared.append(f"{name} absent")
    print("device:", ", ".join(shared))
    return 1 if bad else 0


def smoke(device: str = "cuda") -> int:
    """Every method's own code (silentzone) on a tiny random Llama on `device`: quantize, load, one
    forward. GPTQ/AWQ calibrate on random token windows (the tokenizer and corpus are not needed)."""
    import time
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from silentzone.backends.hf import HFModel, load_hf
    from silentzone.backends.loadtime import load
    from silentzone.quantize import calib
    from silentzone.quantize import hf as qhf
    from silentzone.quantize.loadtime import read_back

    work = Path(tempfile.mkdtemp(prefix="pwsmoke"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    tiny = work / "tiny"
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(tiny)
    # a word-level tokenizer of the tiny vocabulary: llm-compressor loads the model folder's processor
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 512)}},
                                    unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(tiny)

    class Ref:
        def tokenizer(self):
            return AutoTokenizer.from_pretrained(tiny)

        def load_hf(self):
            return LlamaForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()

    rng = np.random.default_rng(0)
    calib.calibration_windows = lambda tok, corpus, n, L: rng.integers(3, 512, size=(n, L)).tolist()
    cases = [("bnb-int8", "bnb", {"type": "int8"}), ("bnb-nf4", "bnb", {"type": "nf4", "double_quant": True}),
             ("bnb-fp4", "bnb", {"type": "fp4"}), ("torchao-int8", "torchao", {"type": "int8_weight_only"}),
             ("quanto-int8", "quanto", {"weights": "int8"}),
             ("hqq-8bit-g64", "hqq", {"nbits": 8, "group_size": 64}),
             ("hqq-4bit-g64", "hqq", {"nbits": 4, "group_size": 64}),
             ("gptq-w4g64", "gptq", dict(bits=4, group_size=64, symmetric=True, corpus="wiki", seq_len=64,
                                         n_samples=4, dampening=0.01)),
             ("awq-w4g64", "awq", dict(bits=4, group_size=64, symmetric=False, corpus="wiki", seq_len=64,
                                       n_samples=4))]
    bad = 0
    for name, method, recipe in cases:
        t0 = time.time()
        try:
            if method in ("gptq", "awq"):
                qhf.quantize(method, recipe, Ref(), work / name)
                info = qhf.read_back(work / name)
                m = load_hf(work / name, device, name)
            else:
                model = load(method, recipe, tiny, device)
                info = read_back(model, method, recipe)
                m = HFModel(model, name, device)
            lg = m.logits([1, 5, 9, 17, 33])
            assert lg.shape == (5, 512) and np.isfinite(lg).all(), f"logits {lg.shape}, not all finite?"
            print(f"smoke {name}: OK on {device}, bpw {info['bpw']:.3f}, {time.time() - t0:.1f} s",
                  flush=True)
        except Exception as e:  # noqa: BLE001 - reported, the next method is tried
            bad += 1
            print(f"smoke {name}: FAIL {type(e).__name__}: {str(e)[:300]}", flush=True)
            traceback.print_exc(limit=-2)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "carry":
        carry(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "join":
        print("\n".join(str(w) for w in join(Path(sys.argv[2]))))
    elif cmd == "check":
        sys.exit(check())
    elif cmd == "smoke":
        sys.exit(smoke(sys.argv[2] if len(sys.argv) > 2 else "cuda"))
    else:
        sys.exit("usage: power_wheels.py carry FIRST TREE_BYTES | join FOLDER | check | smoke [DEVICE]")
