"""Driver: SAMPLES rows with per-prompt KLD, resume without redoing finished (model, task) pairs."""

from __future__ import annotations

import pytest

import silentzone.backends as backends
from silentzone.bench.run import read_samples, run_benchmarks
from silentzone.config import load
from silentzone.paths import CONFIGS


@pytest.fixture(scope="module")
def setup(smollm2_ref, q4_0_gguf, enc, tmp_path_factory):
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    models = {"reference": smollm2_ref.gguf, "Q4_0": q4_0_gguf, "hf-ref": smollm2_ref.hf_dir}
    out = tmp_path_factory.mktemp("study")
    kw = dict(tasks=["sciq", "lambada"], n_items=3, k=64, threads=2, tokenizer=enc.tok, out_dir=out,
              progress=False)
    return study, models, out, kw, run_benchmarks(study, models, **kw)


@pytest.mark.slow
def test_rows_hashes_and_kld(setup):
    study, models, out, kw, df = setup
    assert len(df) == 3 * 2 * 3 and set(df.model) == set(models)
    assert (out / "samples.csv").is_file() and len(read_samples(out / "samples.csv")) == len(df)
    ref = df[df.model == "reference"]
    assert (ref.kld_mean == 0).all() and (ref.kld_max == 0).all()
    # every model saw the same items and the same token ids
    per_item = df.groupby(["task", "item_id"])[["item_hash", "prompt_hash"]].nunique()
    assert (per_item == 1).all().all()
    q = df[df.model == "Q4_0"]
    assert (q.kld_mean > 1e-3).all() and (q.kld_max >= q.kld_mean).all()
    hf = df[df.model == "hf-ref"]  # same weights on transformers: KLD ~ 1e-6
    assert (hf.kld_mean < 1e-4).all()
    assert (hf.set_index("item_id").correct == ref.set_index("item_id").correct).all()
    assert df[df.task == "sciq"].margin.notna().all()


@pytest.mark.slow
def test_resume_skips_finished_pairs(setup, monkeypatch):
    study, models, out, kw, df = setup
    opened = []
    real = backends.open_model

    def counting_open(path, *a, **k):
        opened.append(k.get("name"))
        return real(path, *a, **k)

    monkeypatch.setattr(backends, "open_model", counting_open)
    again = run_benchmarks(study, models, **kw)
    assert opened == []  # nothing to redo: no model was even loaded
    assert again.equals(df) or again.reset_index(drop=True).compare(df.reset_index(drop=True)).empty

    # an interrupted run: one pair never finished -> only that pair is scored again
    (out / "samples" / "Q4_0" / "lambada.csv").unlink()
    kept = (out / "samples" / "reference" / "sciq.csv").stat().st_mtime_ns
    again = run_benchmarks(study, models, **kw)
    assert opened == ["Q4_0"]
    assert (out / "samples" / "reference" / "sciq.csv").stat().st_mtime_ns == kept
    assert len(again) == len(df)

    # a different item count is a different request: the pairs are redone, not reused
    opened.clear()
    run_benchmarks(study, {"reference": models["reference"]}, **{**kw, "n_items": 2})
    assert opened == ["reference"]


@pytest.mark.slow
def test_generation_task_teacher_forced_kld(smollm2_ref, q4_0_gguf, enc, tmp_path, monkeypatch):
    """IFEval rows: NaN margin; the quant's KLD replays the reference's own response ids."""
    import dataclasses
    import math

    from silentzone.bench import tasks as T
    monkeypatch.setitem(T.TASKS, "ifeval", dataclasses.replace(T.TASKS["ifeval"], max_new_tokens=12))
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    df = run_benchmarks(study, {"reference": smollm2_ref.gguf, "Q4_0": q4_0_gguf}, tasks=["ifeval"],
                        n_items=2, k=64, threads=2, tokenizer=enc.tok, out_dir=tmp_path, progress=False)
    assert df.margin.map(math.isnan).all() and (df.response.str.len() > 0).all()
    ref, q = (df[df.model == m].set_index("item_id") for m in ("reference", "Q4_0"))
    assert (ref.n_tokens == q.n_tokens).all()  # same teacher-forced ids: prompt + reference response
    assert (q.kld_mean > 0).all() and (ref.kld_mean == 0).all()


@pytest.mark.slow
def test_interrupted_quant_pass_resumes_item_by_item(smollm2_ref, q4_0_gguf, enc, tmp_path, monkeypatch):
    """A quant pass killed mid-task keeps the items it finished (a JSON-lines partial file) and a
    rerun scores only the rest; the table equals an uninterrupted pass."""
    import json

    import silentzone.bench.run as run

    study = load(CONFIGS / "smollm2.yaml", "smoke")
    models = {"reference": smollm2_ref.gguf, "Q4_0": q4_0_gguf}
    out = tmp_path
    kw = dict(tasks=["sciq"], n_items=3, k=64, threads=2, tokenizer=enc.tok, out_dir=out, progress=False)
    df = run_benchmarks(study, models, **kw)  # the uninterrupted pass
    target = out / "samples" / "Q4_0" / "sciq.csv"
    partial = target.with_name("sciq.csv.partial.jsonl")
    target.unlink()
    real = run._score_likelihood
    calls = []

    def dies_on_third(task, model, p, **k):
        calls.append(p["item"].id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a killed job looks like from inside
        return real(task, model, p, **k)

    monkeypatch.setattr(run, "_score_likelihood", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(study, {"reference": models["reference"], "Q4_0": models["Q4_0"]}, **kw)
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 2 and not target.exists()
    header = json.loads(lines[0])
    assert header["model_path"] == str(models["Q4_0"]) and header["kld_top_k"] == kw["k"]
    # a torn line at the end (the kill came mid-write) is dropped, not read
    with open(partial, "a") as fh:
        fh.write('{"model": "Q4_0", "item_')

    calls.clear()
    monkeypatch.setattr(run, "_score_likelihood", lambda *a, **k: (calls.append(a[2]["item"].id), real(*a, **k))[1])
    again = run_benchmarks(study, {"reference": models["reference"], "Q4_0": models["Q4_0"]}, **kw)
    first = df[(df.model == "Q4_0") & (df.task == "sciq")].reset_index(drop=True)
    assert calls == [first.item_id.iloc[2]]  # only the third item was scored again
    assert not partial.exists() and target.is_file()
    got = again[again.model == "Q4_0"].reset_index(drop=True)
    assert got.drop(columns="study").equals(first.drop(columns="study"))
    assert read_samples(target).reset_index(drop=True).equals(first)  # the file as the first pass wrote it

    # a partial file made against another reference store is not reused
    target.unlink()
    partial.write_text(json.dumps({**header, "reference_store": [0, 0]}) + "\n" + lines[1] + "\n")
    calls.clear()
    run_benchmarks(study, {"reference": models["reference"], "Q4_0": models["Q4_0"]}, **kw)
    assert calls == list(first.item_id)


@pytest.mark.slow
def test_reference_without_store_resumes_and_equals_the_stored_pass(smollm2_ref, enc, tmp_path, monkeypatch):
    """keep_store=False (the float reference of a GPU lease): the reference's rows without its
    distributions, written to a partial file as they come; killed after two items, a rerun scores only
    the third, and the table equals a pass that kept the store (which the quants' KLD needs); asking
    for a quant beside it is an error."""
    import silentzone.bench.run as run

    study = load(CONFIGS / "smollm2.yaml", "smoke")
    ref = {"reference": smollm2_ref.gguf}
    kw = dict(tasks=["sciq"], n_items=3, k=64, threads=2, tokenizer=enc.tok, progress=False)
    stored = run_benchmarks(study, ref, out_dir=tmp_path / "a", **kw)
    assert (tmp_path / "a" / "bench_ref").is_dir()
    out = tmp_path / "b"
    real = run._score_likelihood
    calls = []

    def dies_on_third(task, model, p, **k):
        calls.append(p["item"].id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, model, p, **k)

    monkeypatch.setattr(run, "_score_likelihood", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(study, ref, out_dir=out, keep_store=False, **kw)
    partial = out / "samples" / "reference" / "sciq.csv.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 1 + 2
    calls.clear()
    monkeypatch.setattr(run, "_score_likelihood", lambda *a, **k: (calls.append(a[2]["item"].id), real(*a, **k))[1])
    again = run_benchmarks(study, ref, out_dir=out, keep_store=False, **kw)
    assert calls == [stored.item_id.iloc[2]] and not partial.exists()
    assert not (out / "bench_ref").exists() or not any((out / "bench_ref").iterdir())
    assert again.reset_index(drop=True).equals(stored.reset_index(drop=True))
    with pytest.raises(ValueError, match="keep_store=False scores the reference alone"):
        run_benchmarks(study, {**ref, "Q4_0": smollm2_ref.gguf}, out_dir=out, keep_store=False, **kw)
