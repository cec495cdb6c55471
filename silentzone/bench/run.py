"""Benchmark driver: per-prompt rows (SAMPLES schema) for the reference and every quant.

    study = config.load("configs/smollm2.yaml", "smoke")
    frame = run_benchmarks(study, {"reference": ref.gguf, "Q4_0": "<cache>/quants/<ref>/Q4_0-<hash>"})
    frame = run_benchmarks(study, default_models(study))   # the reference and every finished quant

Layout under study_dir(study, profile):
    samples/<model>/<task>.csv     one finished (model, task) pair; written atomically, so an
                                   interrupted run resumes without redoing finished pairs
    bench_ref/<task>.npz|.json     the reference's per-item distributions (per-prompt KLD)
    samples.csv                    every requested (model, task) pair combined
The reference runs first: quants need its stored distributions. All models see the same token ids
(encoded once with the reference tokenizer); every row carries item and prompt hashes. A finished
pair is reused only if its task version, item count and item set match the current request.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import samples_dir, study_dir
from ..provenance import hash_obj, record
from ..settings import current
from ..tables import SAMPLES, write_table
from . import mc, tasks as T
from .generate import greedy
from .kld import RefStore

log = logging.getLogger("silentzone.bench")

# Tokens that end a generated answer besides the tokenizer's eos: the ends of a turn or text, and the
# start of a new turn (a chat model that opens one has finished its answer).
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<end_of_turn>", "<|eot_id|>", "</s>", "<eos>")


class Encoder:
    """The reference tokenizer, used for every model of a study (identical token ids)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        vocab = tokenizer.get_vocab()
        self.eos = frozenset({i for i in [tokenizer.eos_token_id] if i is not None} |
                             {vocab[t] for t in END_TOKENS if t in vocab})

    def __call__(self, text: str, bos: bool = True) -> list[int]:
        return self.tok(text, add_special_tokens=bos)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def item_prompt(self, task: T.Task, item: T.Item) -> list[int]:
        """Token ids of a generation item's prompt: the task's own rendering when it has one."""
        if task.render is not None:
            return self(task.render(self.tok, item), bos=False)
        return self.prompt(task, item.prompt)

    def prompt(self, task: T.Task, text: str) -> list[int]:
        if task.chat and getattr(self.tok, "chat_template", None):
            rendered = self.tok.apply_chat_template([{"role": "user", "content": text}],
                                                    add_generation_prompt=True, tokenize=False)
            return self(rendered, bos=False)
        return self(text)


def prepare(task: T.Task, items: list[T.Item], enc: Encoder) -> list[dict]:
    """Token ids of every item (once per task, shared by all models) and their hashes."""
    out = []
    for it in items:
        if task.kind == "gen":
            ids = enc.item_prompt(task, it)
            p = {"prompt_ids": ids, "prompt_hash": T.prompt_hash(ids)}
        else:
            ctxs = [enc(c) for c, _ in it.requests]
            conts = [enc(c, bos=False) for _, c in it.requests]
            p = {"ctxs": ctxs, "conts": conts, "n_chars": [len(c) for _, c in it.requests],
                 "prompt_hash": T.prompt_hash({"contexts": ctxs, "continuations": conts})}
        out.append({"item": it, "item_hash": T.item_hash(it), **p})
    return out


def _score_likelihood(task, model, p, shared=True, batched: bool | None = None) -> dict:
    it, ctxs, conts = p["item"], p["ctxs"], p["conts"]
    if task.kind == "lastword":
        return mc.score_lastword(model, ctxs[0], conts[0], shared=shared, batched=batched)
    if all(c == ctxs[0] for c in ctxs):
        return mc.score_mc(model, ctxs[0], conts, it.gold, p["n_chars"], shared=shared, batched=batched)
    # per-choice contexts (winogrande "partial" scoring): no context to share
    res = [mc.score_mc(model, cx, [ct], 0, [n], shared=shared, batched=batched)
           for cx, ct, n in zip(ctxs, conts, p["n_chars"])]
    ll = np.array([r["ll_gold"] for r in res])
    norm = ll / np.maximum(np.asarray(p["n_chars"], float), 1)
    wrong = np.delete(ll, it.gold)
    g = res[it.gold]
    return {"ll": ll, "pred": int(ll.argmax()), "correct": bool(ll.argmax() == it.gold),
            "correct_norm": bool(norm.argmax() == it.gold), "margin": float(ll[it.gold] - wrong.max()),
            "ll_gold": float(ll[it.gold]), "kld_logits": g["kld_logits"], "ids": g["ids"]}


def _stat(path: Path) -> list[int]:
    """(size, mtime_ns) of a file: a reference store written again is another baseline."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _partial_rows(path: Path | None, header: dict, prepared: list[dict]) -> list[dict]:
    """The rows an interrupted pass wrote to `path` (a JSON-lines file: the header, then one row per
    item), when its header equals `header`, for the leading items of `prepared` it holds in order;
    a torn last line is dropped. Anything else: no rows (the pass starts over)."""
    if path is None or not path.is_file():
        return []
    lines = path.read_text().split("\n")
    try:
        if json.loads(lines[0]) != header:
            return []
    except ValueError:
        return []
    rows = []
    for line, p in zip(lines[1:], prepared):
        try:
            row = json.loads(line)
        except ValueError:
            break
        if row.get("item_id") != p["item"].id or row.get("item_hash") != p["item_hash"]:
            break
        rows.append(row)
    return rows


def score_pair(name: str, model, task: T.Task, prepared: list[dict], enc: Encoder, store: RefStore | None,
               is_reference: bool, progress: bool = True, batched: bool | None = None,
               partial: Path | None = None, partial_header: dict | None = None) -> pd.DataFrame:
    """Rows for one (model, task). The reference fills `store`; quants read it for KLD. store None
    (the reference alone, part="selection"): no distributions kept, and a generation item skips the
    teacher-forced forward that only KLD needs. `batched`: how shared-context multiple choice runs
    (None: SILENTZONE_MC_BATCHED; bench/mc.py).

    `partial` (a quant's pass): every finished row is appended to this JSON-lines file as it comes,
    under `partial_header`; a rerun after an interruption keeps the rows it holds for the same header
    and items and scores the rest (each item is scored on its own, so the rows are the same either
    way). The caller removes the file once the table is written."""
    rows = []
    if partial is not None:
        rows = _partial_rows(partial, partial_header or {}, prepared)
        if rows:
            log.info("%s/%s: resuming after %d items scored earlier", name, task.name, len(rows))
        partial.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "w") as fh:  # rewritten whole: a torn or foreign tail goes
            fh.write(json.dumps(partial_header or {}) + "\n")
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        sink = open(partial, "a")
    else:
        sink = None
    prepared = prepared[len(rows):]
    # the per-item [T, V] passes (the reference's log-softmax and top-k, a quant's KLD) run where the
    # model's metrics do: its GPU when it has one (on the host they bound a GPU run to 4-6 items/s on
    # an H100, docs/performance.md); on the CPU the tensors stay where they are
    dev = model.metric_device()
    it_ = prepared
    if progress:
        from tqdm.auto import tqdm
        it_ = tqdm(prepared, desc=f"{name}/{task.name}", leave=False, mininterval=2)
    try:
        for p in it_:
            item = p["item"]
            response = ""
            if task.kind == "gen":
                gen_ids, response = greedy(model, p["prompt_ids"], enc.decode, task.max_new_tokens,
                                           task.stops, enc.eos)
                correct = bool(task.score(item, response))
                res = {"correct": correct, "correct_norm": correct, "margin": math.nan,
                       "ll_gold": math.nan, "pred": -1}
                ids = p["prompt_ids"] + gen_ids if is_reference else store.ids(item.id)
                kld_logits = model.logits(ids)[:-1] if store is not None else None
            else:
                res = _score_likelihood(task, model, p, batched=batched)
                ids, kld_logits = res["ids"], res["kld_logits"]
            if is_reference:
                if store is not None:
                    store.put(item.id, ids, kld_logits, device=dev)
                kl = np.zeros(1)
            else:
                kl = store.kld(item.id, ids, kld_logits, device=dev)
            rows.append({
                "model": name, "task": task.name, "item_id": item.id, "item_hash": p["item_hash"],
                "prompt_hash": p["prompt_hash"], "correct": bool(res["correct"]),
                "margin": float(res["margin"]), "kld_mean": float(kl.mean()) if len(kl) else 0.0,
                "kld_max": float(kl.max()) if len(kl) else 0.0,
                "correct_norm": bool(res["correct_norm"]), "pred": int(res["pred"]),
                "ll_gold": float(res["ll_gold"]), "n_tokens": len(ids), "task_version": task.version,
                "kind": task.kind, "backend": model.kind, "response": response,
            })
            if sink is not None:
                sink.write(json.dumps(rows[-1]) + "\n")
                sink.flush()
    finally:
        if sink is not None:
            sink.close()
    return pd.DataFrame(rows)


def default_models(study, reference=None) -> dict[str, str]:
    """{"reference": the float reference's GGUF, quant_id: finished artifact dir} for every quant of
    the study's profile that silentzone.quantize has finished (quantize.artifact_of). The quants that
    have none (not made yet, or failed) are named in one line on stderr, not skipped silently."""
    import sys
    from ..models import resolve
    from ..quantize import artifact_of
    ref = reference or resolve(study.reference.model, study.reference.dtype)
    out, missing = {"reference": str(ref.gguf)}, []
    for q in study.quants:
        art = artifact_of(study, q, ref)
        if art is None:
            missing.append(q.id)
        else:
            out[q.id] = str(art)
    if missing:
        print(f"silentzone bench: no finished artifact for {len(missing)} of {len(study.quants)} quant(s) "
              f"of {study.study}/{study.profile_name} (run silentzone quantize): {', '.join(missing)}",
              file=sys.stderr, flush=True)
    return out


def read_samples(path: str | Path) -> pd.DataFrame:
    """Read a SAMPLES csv; float columns are cast first (a column of zeros is written as '0')."""
    from analysis.contracts import validate
    from ..tables import ContractError
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: file not found")
    floats = {c.name: "float64" for c in SAMPLES.columns if c.kind == "float"}
    frame = pd.read_csv(path, dtype={**floats, "response": "string"}, keep_default_na=False,
                        na_values={c: [""] for c in floats})
    for c in SAMPLES.columns:
        if c.kind == "str":
            frame[c.name] = frame[c.name].astype(str).astype(object)
    if "response" in frame:
        frame["response"] = frame["response"].fillna("").astype(str).astype(object)
    return validate(frame, SAMPLES, where=str(path))


def _signature(task: T.Task, prepared: list[dict], kv_cache: str = "f16", batched: bool = False) -> dict:
    """What a finished task file was made from: the items and prompts, the reference's KV cache
    (every row's per-prompt KLD is against the reference; the key is absent for the default f16) and
    batched multiple choice (absent when off: a quant's margins move with the batch shape)."""
    return {"task": task.name, "task_version": task.version, "n_items": len(prepared),
            "items_hash": hash_obj([(p["item"].id, p["item_hash"], p["prompt_hash"]) for p in prepared]),
            **({"reference_kv_cache": kv_cache} if kv_cache != "f16" else {}),
            **({"mc_batched": True} if batched and task.kind != "gen" else {})}


def _finished(path: Path, sig: dict) -> bool:
    prov = path.with_name(path.name + ".provenance.json")
    if not (path.is_file() and prov.is_file()):
        return False
    import json
    return json.loads(prov.read_text()).get("bench") == sig


def _store_matches(path: Path, sig: dict) -> bool:
    import json
    man = path.with_suffix(".json")
    return RefStore.exists(path) and json.loads(man.read_text()).get("bench") == sig


def run_benchmarks(study, models: dict, tasks: list[str] | None = None, n_items: int | None = None,
                   profile: str = "default", k: int = 1024, threads: int | None = None,
                   tokenizer=None, out_dir: str | Path | None = None, progress: bool = True,
                   seed: int | None = None, combined: bool = True, device: str = "cpu",
                   part: str = "study", keep_store: bool = True) -> pd.DataFrame:
    """Score every model on every task; resume finished (model, task) pairs; return all rows.

    study     a loaded Study (config.load) or a study name (configs/<name>.yaml, `profile`)
    models    {'reference': GGUF file or HF dir, quant_id: artifact path, ...}
    tasks     default: the study's (profile's) tasks; n_items default: profile.n_items
    k         top-k reference log-probs kept for KLD (k >= vocab: exact full-vocabulary KLD)
    part      "study": the study's items (n_items of each task, without the profile's held-back
              selection_items); "selection": the held-back items alone (bench.selection), for the
              reference alone: no quant is scored on them, so no reference distributions are kept
    combined  also write samples.csv of every requested pair (the workflow runs one quant per job
              and gathers the pairs itself, so its jobs pass False)
    device    cpu or cuda: where HF-format models and load-time quants run (backends.open_model)
    keep_store  keep the reference's distributions (bench_ref/<task>.npz), the quants' KLD baseline;
              False: the reference alone, its tables only (a second, float run of it: perf/gpu's
              float-reference stage), written to a partial file as they come, so that an interrupted
              pass resumes like a quant's
    """
    from ..backends import open_model
    from ..config import load_study
    if isinstance(study, str):
        study = load_study(study, profile)
    if "reference" not in models:
        raise ValueError("models must include 'reference' (its distributions are the KLD baseline)")
    if part == "selection" and set(models) != {"reference"}:
        raise ValueError("part='selection' scores the reference alone (the held-back items)")
    if not keep_store and set(models) != {"reference"}:
        raise ValueError("keep_store=False scores the reference alone (the quants' KLD needs its distributions)")
    root = Path(out_dir) if out_dir else study_dir(study.study, study.profile_name)
    task_names = list(tasks or study.tasks)
    n = n_items if n_items is not None else study.profile.n_items
    threads = threads or current().threads
    if tokenizer is None:
        from ..models import resolve
        tokenizer = resolve(study.reference.model, study.reference.dtype).tokenizer()
    enc = Encoder(tokenizer)
    if "livecodebench" in task_names and study.livecodebench.file:
        from ..config import livecodebench_file
        from .livecodebench import configure
        configure(livecodebench_file(study), study.livecodebench.start, study.livecodebench.end)
    prov = record(study.config_hash, {"selection": seed})
    batched = study.profile.mc_batched or mc.batched_default()
    order = ["reference"] + [m for m in models if m != "reference"]
    prepared = {}
    for tn in task_names:
        task = T.get(tn)
        held = int(getattr(study.profile, "selection_items", 0))
        if part == "selection":
            items = task.held_back_items(held, study.held_seed)
        elif part == "study":
            items = task.items(n, seed, held_back=held, held_seed=study.held_seed)
        else:
            raise ValueError(f"part must be 'study' or 'selection', got {part!r}")
        prepared[tn] = prepare(task, items, enc)
    frames = []
    for name in order:
        model = None
        for tn in task_names:
            task, prep = T.get(tn), prepared[tn]
            sig = _signature(task, prep, study.kv_cache, batched)
            out = samples_dir(study.study, study.profile_name, name, root) / f"{tn}.csv"
            ref_path = root / "bench_ref" / f"{tn}.npz"
            keep = part != "selection" and keep_store  # no quant is scored on held-back items: no KLD baseline
            done = _finished(out, sig) and (name != "reference" or not keep or _store_matches(ref_path, sig))
            if done:
                log.info("%s/%s: finished earlier, reusing %s", name, tn, out)
                frames.append(read_samples(out))
                continue
            if model is None:
                model = open_model(models[name], threads=threads, name=name, device=device,
                                   kv_cache=study.kv_cache if name == "reference" else None,
                                   dtype="float32" if name == "reference" else None)
            is_ref = name == "reference"
            store = (RefStore(ref_path, k=k) if keep else None) if is_ref else RefStore.load(ref_path, expect=sig)
            # a quant's rows go to a partial file as they come (the reference's distributions are
            # kept in memory until its store is saved: its pass starts over), and so do the reference's
            # without a store (keep_store=False)
            resumable = not is_ref or not keep_store
            partial = out.with_name(out.name + ".partial.jsonl") if resumable else None
            header = None if not resumable else (
                {"bench": sig, "model_path": str(models[name]), "no_store": True} if is_ref else
                {"bench": sig, "model_path": str(models[name]), "kld_top_k": k, "reference_store": _stat(ref_path)})
            frame = score_pair(name, model, task, prep, enc, store, is_ref, progress, batched=batched,
                               partial=partial, partial_header=header)
            frame.insert(0, "study", study.study)
            if store is not None and is_ref:
                store.save({"bench": sig})
            write_table(frame, SAMPLES, out, {**prov, "bench": sig, "model_path": str(models[name]),
                                              "kld_top_k": k, "attention": model.attention(), "device": device})
            if partial is not None:
                partial.unlink(missing_ok=True)
            log.info("%s/%s: %d items, acc %.3f", name, tn, len(frame), frame["correct"].mean())
            frames.append(read_samples(out))
        del model
    allrows = pd.concat(frames, ignore_index=True)
    if not combined:
        return allrows
    write_table(allrows, SAMPLES, root / "samples.csv",
                {**prov, "models": {k_: str(v) for k_, v in models.items()}, "tasks": task_names,
                 "n_items": n})
    return allrows
