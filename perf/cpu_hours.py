"""Issue 19, item 5: the CPU hours of a powered profile, from measured per-item rates.

Not a ratio (this is not one of `make perf`'s scripts): an absolute estimate, labelled as such.
For each task of the profile it times `silentzone.bench.run.score_pair` (what the bench stage runs
per item: the batched multiple-choice logits, the decision, the per-prompt KLD work) on the first
`--items` items of the profile's own item list, for the reference (F32 GGUF, F32 KV cache), one
GGUF quant (`--gguf`, llama.cpp) and one load-time quant (`--hf`, transformers on the CPU), at
SILENTZONE_PERF_THREADS threads (default 1: one core). Then

    hours = sum over tasks of items(task) x [ s/item(reference) + n_gguf x s/item(gguf)
                                              + n_other x s/item(hf) ]

with items(task) the profile's item count and n_gguf / n_other its GGUF / other quants. Per core:
on C cores running C such jobs side by side, divide by C (the bench stage runs one job per quant).
Writes perf/cpu/cpu_hours-<study>.json.

    python perf/cpu_hours.py --study smollm2 --items 12
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    a = C.args(__doc__, study="smollm2", profile="power", items=12, gguf="Q4_K_M", hf="bnb-int8", k=1024)
    from silentzone.backends import open_model
    from silentzone.bench import tasks as T
    from silentzone.bench.kld import RefStore
    from silentzone.bench.run import Encoder, default_models, prepare, score_pair
    from silentzone.config import load_study
    from silentzone.models import resolve

    study = load_study(a.study, a.profile)
    ref = resolve(study.reference.model, study.reference.dtype)
    enc = Encoder(ref.tokenizer())
    arts = default_models(study, ref)
    for q in (a.gguf, a.hf):
        if q not in arts:
            sys.exit(f"cpu_hours.py: quant {q} of {a.study}/{a.profile} is not made here (silentzone quantize)")
    held = int(study.profile.selection_items)
    work = C.work_dir(f"cpu_hours-{a.study}")
    full, prep = {}, {}
    for tn in study.tasks:
        task = T.get(tn)
        items = task.items(study.profile.n_items, None, held_back=held, held_seed=study.held_seed)
        full[tn] = len(items)
        prep[tn] = prepare(task, items[: a.items], enc)
    methods = {q.id: q.method for q in study.quants}
    n_gguf = sum(m == "gguf" for m in methods.values())
    n_other = len(methods) - n_gguf
    roles = [("reference", arts["reference"], study.kv_cache, "float32"), ("gguf", arts[a.gguf], None, None),
             ("hf", arts[a.hf], None, None)]
    stores: dict = {}
    per_item: dict = {r: {} for r, *_ in roles}
    for role, path, kv, dtype in roles:
        m = open_model(path, threads=C.THREADS, name=role, kv_cache=kv, dtype=dtype)
        for tn, p in prep.items():
            task = T.get(tn)
            is_ref = role == "reference"
            store = RefStore(work / f"{tn}.npz", k=a.k) if is_ref else stores[tn]
            score_pair(role, m, task, p[:1], enc, RefStore(work / "warm.npz", k=a.k) if is_ref else store,
                       is_ref, progress=False, batched=study.profile.mc_batched)  # warm-up item
            t0 = time.perf_counter()
            score_pair(role, m, task, p, enc, store, is_ref, progress=False, batched=study.profile.mc_batched)
            per_item[role][tn] = (time.perf_counter() - t0) / len(p)
            if is_ref:
                stores[tn] = store
            print(f"{a.study} {role} {tn}: {per_item[role][tn]:.3f} s/item ({len(p)} items)", flush=True)
        del m
    secs = {tn: full[tn] * (per_item["reference"][tn] + n_gguf * per_item["gguf"][tn]
                            + n_other * per_item["hf"][tn]) for tn in full}
    hours = sum(secs.values()) / 3600
    rows = [C.row(f"{a.study}/{a.profile} bench on the CPU, one core (estimate)", round(hours, 1), None, None, "h",
                  f"{sum(full.values())} items per model x (reference + {n_gguf} GGUF + {n_other} other quants); "
                  f"per-item seconds measured on {a.items} items per task at {C.THREADS} thread(s): "
                  + ", ".join(f"{tn} ref {per_item['reference'][tn]:.2f} / gguf {per_item['gguf'][tn]:.2f} / "
                              f"hf {per_item['hf'][tn]:.2f}" for tn in full))]
    print(C.format_row(rows[0]), flush=True)
    C.write(f"cpu_hours-{a.study}", f"CPU hours of the {a.profile} profile's bench, estimated from measured "
            "per-item rates (issue 19 item 5)", rows, out_dir=a.out,
            extra={"items": full, "per_item_s": per_item, "quants": {"gguf": n_gguf, "other": n_other},
                   "measured_on": {"gguf": a.gguf, "hf": a.hf, "items_per_task": a.items},
                   "seconds_per_task": secs})


if __name__ == "__main__":
    main()
