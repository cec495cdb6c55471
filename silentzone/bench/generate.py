"""Greedy generation on both backends, stopping at the task's stop strings or an end token.

    ids, text = greedy(model, prompt_ids, decode, max_new_tokens=256, stops=("\\n\\n",), eos={2})

The same loop runs on llama.cpp (eval one token at a time on its KV cache) and transformers
(past_key_values), always taking the argmax: no sampler, no repetition penalty. `text` is cut
before the first stop string; `ids` are the generated tokens whose decoded text lies within that
cut (what teacher-forced KLD replays on every model).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _first_stop(text: str, stops) -> int:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return cut


def greedy(model, prompt_ids: list[int], decode: Callable[[list[int]], str], max_new_tokens: int = 256,
           stops=(), eos: set[int] | frozenset = frozenset()) -> tuple[list[int], str]:
    step = model.decode_steps(prompt_ids)  # the engine's KV cache, one token at a time
    gen: list[int] = []
    text = ""
    logits = next(step)
    for _ in range(max_new_tokens):
        tok = int(np.argmax(logits))
        if tok in eos:
            break
        gen.append(tok)
        text = decode(gen)
        if stops and _first_stop(text, stops) < len(text):
            break
        if len(gen) == max_new_tokens:
            break
        logits = step.send(tok)
    step.close()
    cut = _first_stop(text, stops)
    text = text[:cut]
    keep = len(gen)
    while keep > 0 and len(decode(gen[:keep])) > cut:
        keep -= 1
    return gen[:keep], text
