"""GGUF quants with the real llama.cpp tools (llama-quantize, llama-imatrix) from the reference's
F32 GGUF, and read-back of what is really in the file.

    imat = imatrix(reference, "wiki", chunks=64, ctx=512, out_dir=...)   # cached .gguf imatrix
    quantize(reference.gguf, out_file, recipe, imatrix_file=imat)        # runs llama-quantize
    info = read_back(out_file, requested="Q4_K_M")                       # histogram, bpw, fallback

Why read back: hidden sizes 576 (SmolLM2) and 640 (Gemma3) are not multiples of 256, so llama-quantize
falls back to legacy types for most K- and IQ-quant tensors (a "Q4_K_M" of SmolLM2 is mostly q5_0).
The manifest labels every quant by the tensor types actually in the file.

Bits per weight (bpw), exact definition: over the 2-D weight matrices of the file whose type is a
quantized (not f32/f16/bf16) ggml type, bpw = 8 * sum(tensor bytes) / sum(tensor elements), the
bytes being the tensor's data in the file (quantization blocks with their scales). 1-D tensors
(norms) are not counted. `bpw_all` counts every 2-D matrix, float ones included at their width.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from .. import llama_tools
from ..settings import current

FLOAT_TYPES = ("f32", "f16", "bf16")

# The tensor type that a file type asks for on most matrices (its "base" type): a file whose matrices
# are mostly something else fell back (K/IQ quants on rows that are not a multiple of 256).
BASE_TYPE = {
    "F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0", "Q6_K": "q6_k", "Q5_K_M": "q5_k",
    "Q5_K_S": "q5_k", "Q5_1": "q5_1", "Q5_0": "q5_0", "Q4_K_M": "q4_k", "Q4_K_S": "q4_k", "Q4_1": "q4_1",
    "Q4_0": "q4_0", "IQ4_NL": "iq4_nl", "IQ4_XS": "iq4_xs", "Q3_K_L": "q3_k", "Q3_K_M": "q3_k",
    "Q3_K_S": "q3_k", "IQ3_M": "iq3_s", "IQ3_S": "iq3_s", "IQ3_XS": "iq3_xxs", "IQ3_XXS": "iq3_xxs",
    "Q2_K": "q2_k", "Q2_K_S": "q2_k", "IQ2_M": "iq2_s", "IQ2_S": "iq2_s", "IQ2_XS": "iq2_xs",
    "IQ2_XXS": "iq2_xxs", "IQ1_M": "iq1_m", "IQ1_S": "iq1_s", "TQ1_0": "tq1_0", "TQ2_0": "tq2_0",
}
IMATRIX_CTX = 512  # llama-imatrix chunk length (its default), tokens


def imatrix(reference, corpus: str, chunks: int, out_dir: Path, ctx: int = IMATRIX_CTX,
            threads: int | None = None) -> Path:
    """An importance matrix of `reference` on `chunks` x `ctx` tokens of the corpus's calibration half.

    Cached as <out_dir>/imatrix-<corpus>-c<chunks>x<ctx>.gguf (written to a temporary name, then
    renamed); the calibration text file used is kept beside it. llama-imatrix runs in out_dir and
    is given bare file names: it records its -f argument in the file (and llama-quantize copies it
    into every quant as quantize.imatrix.dataset), so an absolute path would make the bytes of
    imatrix quants depend on where the cache lives.
    """
    from .calib import calibration_text
    out = Path(out_dir) / f"imatrix-{corpus}-c{chunks}x{ctx}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    text_file = out.with_suffix(".txt")
    text = calibration_text(corpus)[: chunks * ctx * 12]  # plenty of characters for `chunks` chunks
    tmp_txt = text_file.with_name(f".{text_file.name}.tmp-{os.getpid()}")
    tmp_txt.write_text(text, encoding="utf-8")
    os.replace(tmp_txt, text_file)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.gguf")
    try:
        llama_tools.run("llama-imatrix", "-m", str(Path(reference.gguf).resolve()), "-f", text_file.name,
                        "-o", tmp.name, "-c", str(ctx), "-b", str(ctx), "--chunks", str(chunks),
                        "--no-ppl", "--output-frequency", "1000000", "--seed", "0",
                        threads=threads, log=out.with_suffix(".log"), cwd=out.parent)
        if not tmp.is_file():
            from .failures import QuantFailed
            raise QuantFailed(f"llama-imatrix wrote no file {tmp.name}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def quantize(source_gguf: Path, out_file: Path, recipe: dict, imatrix_file: Path | None = None,
             threads: int | None = None, log: Path | None = None) -> str:
    """Run llama-quantize for a gguf recipe; return its stdout+stderr (RuntimeError from
    llama_tools.run when it exits non-zero: a declared tool failure, see failures.py).
    With an imatrix it runs in the imatrix's folder and names it bare, since llama-quantize writes
    that argument into the quant (quantize.imatrix.file): the bytes then do not depend on the path."""
    args, cwd = [], None
    source_gguf, out_file = Path(source_gguf).resolve(), Path(out_file).resolve()
    if imatrix_file is not None:
        cwd = Path(imatrix_file).resolve().parent
        args += ["--imatrix", Path(imatrix_file).name]
    if recipe.get("output_type"):
        args += ["--output-tensor-type", recipe["output_type"]]
    if recipe.get("token_embedding_type"):
        args += ["--token-embedding-type", recipe["token_embedding_type"]]
    if recipe.get("pure"):
        args += ["--pure"]
    nthread = str(threads or current().threads)
    # llama-quantize takes nthreads as its last positional argument (not -t).
    p = llama_tools.run("llama-quantize", *args, str(source_gguf), str(out_file), recipe["type"],
                        nthread, log=log, cwd=cwd)
    return p.stdout + p.stderr


def fallback_count(log_text: str) -> int | None:
    """'WARNING: 180 of 272 tensor(s) required fallback quantization' -> 180 (0 if no warning)."""
    m = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback", log_text)
    return int(m.group(1)) if m else 0


def read_back(path: Path | list[Path], requested: str = "") -> dict:
    """Tensor types and bits per weight read from a GGUF file (or every shard of a split one, given
    as a list) with gguf.GGUFReader.

    Returns {tensor_types: {type: n_matrices}, elements: {type: n_elements}, bpw, bpw_all,
    main_type (most elements), fallback_frac (share of matrix elements not of the requested file
    type's base type; None if `requested` is empty)}. Types are lower-case ggml names.
    """
    from gguf import GGUFReader
    paths = path if isinstance(path, (list, tuple)) else [path]
    counts, elems, nbytes = Counter(), Counter(), Counter()
    for t in (t for p in paths for t in GGUFReader(str(p)).tensors):
        if len(t.shape) != 2:
            continue
        ty = t.tensor_type.name.lower()
        counts[ty] += 1
        elems[ty] += int(t.n_elements)
        nbytes[ty] += int(t.n_bytes)
    q = [ty for ty in counts if ty not in FLOAT_TYPES]
    bpw = 8 * sum(nbytes[t] for t in q) / sum(elems[t] for t in q) if q else None
    total = sum(elems.values())
    base = BASE_TYPE.get(requested)
    return {
        "tensor_types": dict(sorted(counts.items(), key=lambda kv: -elems[kv[0]])),
        "elements": dict(elems),
        "bpw": bpw,
        "bpw_all": 8 * sum(nbytes.values()) / total if total else None,
        "main_type": max(elems, key=elems.get) if elems else "",
        "fallback_frac": (1 - elems.get(base, 0) / total) if base and total else None,
    }
