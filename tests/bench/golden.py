"""Regenerate the golden per-item values pinned by test_mc.py (real SmolLM2 reference, llama.cpp F32):

    .venv/bin/python tests/bench/golden.py > tests/bench/data/golden_items.json
"""

from __future__ import annotations

import json
import os
import sys

ITEMS = {"sciq": 3, "piqa": 3}  # the first n items of each task


def compute(model, enc) -> dict:
    from silentzone.bench import tasks
    from silentzone.bench.run import _score_likelihood, prepare
    out = {}
    for name, n in ITEMS.items():
        task = tasks.get(name)
        for p in prepare(task, task.items(n), enc):
            r = _score_likelihood(task, model, p)
            out[p["item"].id] = {"item_hash": p["item_hash"], "prompt_hash": p["prompt_hash"],
                                 "ll": [round(float(v), 5) for v in r["ll"]], "correct": r["correct"],
                                 "correct_norm": r["correct_norm"], "margin": round(r["margin"], 5)}
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    from silentzone.backends import open_model
    from silentzone.bench.run import Encoder
    from silentzone.models import resolve
    ref = resolve("embedded:smollm2-135m-instruct")
    print(json.dumps(compute(open_model(ref.gguf, threads=2), Encoder(ref.tokenizer())), indent=1))
