"""The powered profile's bench path (issue 19): where the reference is scored, batched multiple
choice as a profile key, per-task bench jobs, and the per-item passes on the model's device."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import silentzone.backends as backends
from silentzone.backends.llama_cpp import LlamaCppModel
from silentzone.bench.kld import RefStore, coarse_kld
from silentzone.bench.run import read_samples, run_benchmarks
from silentzone.config import ConfigError, load
from silentzone.paths import CONFIGS


def test_the_reference_is_scored_from_its_gguf_unless_a_gpu_lacks_a_cuda_llama_cpp(monkeypatch):
    ref = SimpleNamespace(gguf="/m/ref.gguf", hf_dir="/m/ref-hf")
    assert backends.llama_offloads() is False  # CI and this machine build llama.cpp for the CPU
    assert backends.reference_path(ref, "cpu") == "/m/ref.gguf"
    assert backends.reference_path(ref, "cuda") == "/m/ref-hf"  # no CUDA build: transformers
    monkeypatch.setattr(backends, "llama_offloads", lambda: True)
    assert backends.reference_path(ref, "cuda") == "/m/ref.gguf"
    assert backends.reference_path(ref, "cuda:1") == "/m/ref.gguf"


def test_power_profiles_turn_batched_on_and_the_key_enters_the_hash_only_when_set():
    for study in ("smollm2", "gemma3"):
        assert load(CONFIGS / f"{study}.yaml", "power").profile.mc_batched is True
        assert load(CONFIGS / f"{study}.yaml", "default").profile.mc_batched is False


def test_mc_batched_must_be_a_bool(tmp_path):
    text = (CONFIGS / "smollm2.yaml").read_text().replace(
        "    n_items: 20\n", "    n_items: 20\n    mc_batched: 1\n", 1)
    cfg = tmp_path / "smollm2.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"profiles\.smoke\.mc_batched: must be bool"):
        load(cfg, "smoke")


def test_store_passes_on_a_named_device_give_the_same_arrays():
    """device= moves the [T, V] passes; on the CPU device the arrays are the default path's bits,
    and the KLD equals a float64 hand computation over the coarsened distribution."""
    import torch
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 50)).astype(np.float32)
    cand = logits + rng.normal(0, 0.5, logits.shape).astype(np.float32)
    a, b = RefStore("/tmp/a.npz", k=8), RefStore("/tmp/b.npz", k=8)
    a.put("x", list(range(7)), logits)
    b.put("x", list(range(7)), logits, device=torch.device("cpu"))
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    kl = b.kld("x", list(range(7)), cand, device=torch.device("cpu"))
    np.testing.assert_array_equal(kl, a.kld("x", list(range(7)), cand))
    # by hand: top-8 of p, one bucket for the rest, q over the same 9 cells
    p = np.exp(logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64), -1, keepdims=True))
    q = np.exp(cand.astype(np.float64) - np.logaddexp.reduce(cand.astype(np.float64), -1, keepdims=True))
    for t in range(6):
        top = np.argsort(-p[t])[:8]
        pk, qk = p[t, top], q[t, top]
        want = (pk * np.log(pk / qk)).sum() + (1 - pk.sum()) * np.log((1 - pk.sum()) / (1 - qk.sum()))
        assert kl[t] == pytest.approx(want, rel=1e-5)
    np.testing.assert_array_equal(
        coarse_kld(a.arrays["a0_lp"], a.arrays["a0_idx"], a.arrays["a0_rest"], cand, device="cpu"), kl)
    # in blocks of rows (1, 2, 4 rows of 50 float64: 400, 800, 1,600 bytes): every row is its own,
    # so the same bits (6 rows in 6, 3, 2 blocks; also a torch tensor's rows)
    for rows in (1, 2, 4):
        np.testing.assert_array_equal(coarse_kld(a.arrays["a0_lp"], a.arrays["a0_idx"], a.arrays["a0_rest"],
                                                 cand, device="cpu", chunk_bytes=rows * 8 * 50), kl)
        np.testing.assert_array_equal(coarse_kld(a.arrays["a0_lp"], a.arrays["a0_idx"], a.arrays["a0_rest"],
                                                 torch.from_numpy(cand), chunk_bytes=rows * 8 * 50), kl)


@pytest.mark.slow
def test_a_batched_profile_scores_choices_in_one_decode_and_keeps_the_f32_reference_bits(
        smollm2_ref, q4_0_gguf, enc, tmp_path, monkeypatch):
    """mc_batched: true in a profile: multiple choice goes through the stream context, the bench
    signature says so (a sequential run does not reuse the file), the F32 reference's margins are
    the sequential path's bits, a quant's answers stay and its margins move by < 1e-2 nats."""
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    f32 = replace(study, profile=replace(study.profile, reference_kv_cache="f32"))
    on = replace(f32, profile=replace(f32.profile, mc_batched=True))
    models = {"reference": smollm2_ref.gguf, "Q4_0": q4_0_gguf}
    kw = dict(tasks=["sciq"], n_items=4, k=64, threads=2, tokenizer=enc.tok, progress=False)
    calls = []
    real = LlamaCppModel._batched
    monkeypatch.setattr(LlamaCppModel, "_batched", lambda self, c, x: calls.append(1) or real(self, c, x))
    b = run_benchmarks(on, models, out_dir=tmp_path / "on", **kw)
    assert len(calls) == 2 * 4  # reference and Q4_0, 4 items each, one batched call per item
    prov = json.loads((tmp_path / "on/samples/Q4_0/sciq.csv.provenance.json").read_text())
    assert prov["bench"]["mc_batched"] is True and prov["bench"]["reference_kv_cache"] == "f32"
    assert prov["device"] == "cpu"  # where the table was scored (run_benchmarks' default device)
    calls.clear()
    s = run_benchmarks(f32, models, out_dir=tmp_path / "off", **kw)
    assert calls == []
    key = ["model", "item_id"]
    b, s = b.sort_values(key).reset_index(drop=True), s.sort_values(key).reset_index(drop=True)
    ref = b.model == "reference"
    np.testing.assert_array_equal(b[ref].margin.to_numpy(), s[ref].margin.to_numpy())
    pd.testing.assert_series_equal(b.correct, s.correct)
    np.testing.assert_allclose(b[~ref].margin.to_numpy(), s[~ref].margin.to_numpy(), atol=1e-2)
    # the same out_dir with batched off: the batched files are not taken for sequential ones
    calls.clear()
    opened = []
    real_open = backends.open_model
    monkeypatch.setattr(backends, "open_model", lambda p, **k: opened.append(k["name"]) or real_open(p, **k))
    run_benchmarks(f32, models, out_dir=tmp_path / "on", **kw)
    assert opened == ["reference", "Q4_0"]
    assert len(read_samples(tmp_path / "on/samples/Q4_0/sciq.csv")) == 4


def test_the_reference_opens_in_float32_and_quants_at_their_device_default(monkeypatch, tmp_path):
    """run_benchmarks asks for a float32 reference (a GPU's default dtype is bfloat16)."""
    asked = {}

    class Stop(Exception):
        pass

    def fake_open(path, **k):
        asked[k["name"]] = k.get("dtype")
        raise Stop
    monkeypatch.setattr(backends, "open_model", fake_open)
    study = load(CONFIGS / "smollm2.yaml", "smoke")

    class Tok:
        eos_token_id = 2
        chat_template = None

        def get_vocab(self):
            return {}

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1] + [3 + (ord(c) % 50) for c in text[:20]]}
    with pytest.raises(Stop):
        run_benchmarks(study, {"reference": "r.gguf"}, tasks=["sciq"], n_items=1, tokenizer=Tok(),
                       out_dir=tmp_path, progress=False)
    assert asked == {"reference": "float32"}


def test_stage_bench_tasks_must_belong_to_the_profile(smollm2_ref, tmp_path):
    from silentzone.workflow import stages
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    with pytest.raises(ConfigError, match=r"--tasks: hellaswag not among the tasks of smollm2/smoke \(sciq, piqa\)"):
        stages.bench(study, "reference", tmp_path / "m.json", tasks=["sciq", "hellaswag"])
    assert not (tmp_path / "m.json").exists()


def test_stage_bench_passes_its_tasks_and_records_them(smollm2_ref, tmp_path, monkeypatch):
    import silentzone.bench.run as R
    from silentzone.workflow import stages
    seen = {}

    def fake(study, models, tasks=None, **k):
        seen.update(models=models, tasks=tasks)
        return pd.DataFrame({"model": ["reference"] * 3, "correct": [True, False, True]})
    monkeypatch.setattr(R, "run_benchmarks", fake)
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    stages.bench(study, "reference", tmp_path / "m.json", tasks=["piqa"])
    marker = json.loads((tmp_path / "m.json").read_text())
    assert seen == {"models": {"reference": str(smollm2_ref.gguf)}, "tasks": ["piqa"]}
    assert marker["tasks"] == ["piqa"] and marker["n"] == 3 and marker["acc"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_context_rows_kept_as_torch_tensors_give_the_numpy_paths_bits(
        smollm2_ref, q4_0_gguf, enc, tmp_path, monkeypatch):
    """LlamaCppModel.rows_to: on a GPU the context's [T, V] rows go from llama.cpp's buffer to a
    torch tensor and stay there for the KLD and the reference's top-k. Run here on the CPU as torch
    tensors, every column of every row (answers, margins, log-likelihoods, per-item KLD) is the
    numpy path's, for batched multiple choice (sciq: the stream context) and one continuation
    (lambada: full passes)."""
    import torch
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    on = replace(study, profile=replace(study.profile, mc_batched=True, reference_kv_cache="f32"))
    models = {"reference": smollm2_ref.gguf, "Q4_0": q4_0_gguf}
    kw = dict(tasks=["sciq", "lambada"], n_items=3, k=64, threads=2, tokenizer=enc.tok, progress=False)
    seen = []
    real = RefStore.kld

    def spy(self, item_id, ids, cand, device=None):
        seen.append(type(cand))
        return real(self, item_id, ids, cand, device)
    monkeypatch.setattr(RefStore, "kld", spy)
    a = run_benchmarks(on, models, out_dir=tmp_path / "numpy", **kw)
    assert set(seen) == {np.ndarray}
    seen.clear()
    monkeypatch.setattr(LlamaCppModel, "rows_to", "cpu")
    b = run_benchmarks(on, models, out_dir=tmp_path / "torch", **kw)
    assert set(seen) == {torch.Tensor} and len(seen) == 6  # Q4_0: 3 sciq + 3 lambada items
    key = ["model", "task", "item_id"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert len(a) == 12 and (a.model == "Q4_0").sum() == 6
    assert (a[a.model == "Q4_0"].kld_mean > 0).all()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for f in ("sciq", "lambada"):  # the reference's stored top-k: the same arrays
        x, y = (np.load(tmp_path / d / "bench_ref" / f"{f}.npz") for d in ("numpy", "torch"))
        assert x.files == y.files
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k])
