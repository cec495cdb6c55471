"""Likelihood scoring on the real SmolLM2 reference: golden values, shared context == per-choice
passes, and llama.cpp and transformers agree."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from silentzone.bench import mc, tasks
from silentzone.bench.run import _score_likelihood, prepare

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_items.json").read_text())


@pytest.fixture(scope="module")
def prepared(enc):
    out = {}
    for name in ("sciq", "piqa"):
        t = tasks.get(name)
        out[name] = prepare(t, t.items(3), enc)
    return out


def test_golden_items_llama_cpp(gguf_model, prepared):
    """Regenerate: .venv/bin/python tests/bench/golden.py > tests/bench/data/golden_items.json"""
    for name, prep in prepared.items():
        for p in prep:
            g = GOLDEN[p["item"].id]
            assert p["item_hash"] == g["item_hash"] and p["prompt_hash"] == g["prompt_hash"]
            r = _score_likelihood(tasks.get(name), gguf_model, p)
            np.testing.assert_allclose(r["ll"], g["ll"], atol=2e-3)  # thread-count rounding only
            assert r["correct"] == g["correct"] and r["correct_norm"] == g["correct_norm"]
            assert r["margin"] == pytest.approx(g["margin"], abs=2e-3)


@pytest.mark.parametrize("backend", ["gguf_model", "hf_model"])
def test_shared_context_equals_per_choice_full_passes(backend, prepared, request):
    model = request.getfixturevalue(backend)
    for name, prep in prepared.items():
        for p in prep:
            a = mc.score_mc(model, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"], shared=True)
            b = mc.score_mc(model, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"], shared=False)
            np.testing.assert_allclose(a["ll"], b["ll"], atol=1e-3)
            key = ("correct", "correct_norm", "pred")
            assert [a[k] for k in key] == [b[k] for k in key]
            np.testing.assert_allclose(a["kld_logits"], b["kld_logits"], atol=2e-3)
            assert a["ids"] == b["ids"]


def test_backends_agree_on_the_reference(gguf_model, hf_model, prepared):
    for name, prep in prepared.items():
        for p in prep:
            a = _score_likelihood(tasks.get(name), gguf_model, p)
            b = _score_likelihood(tasks.get(name), hf_model, p)
            assert a["correct"] == b["correct"] and a["correct_norm"] == b["correct_norm"]
            assert abs(a["margin"] - b["margin"]) < 0.02  # measured: <= 0.004 nats


def test_lastword_greedy_margin_sign_matches_correctness(gguf_model, hf_model, enc):
    t = tasks.get("lambada")
    for p in prepare(t, t.items(4), enc):
        a = _score_likelihood(t, gguf_model, p)
        b = _score_likelihood(t, hf_model, p)
        assert a["correct"] == (a["margin"] > 0) and a["correct"] == b["correct"]
        assert len(a["kld_logits"]) == len(a["ids"]) - 1


@pytest.mark.slow
def test_shared_context_is_faster(gguf_model, enc):
    """Timing ratio on SciQ items with support paragraphs: reported, loosely checked (noisy CPUs)."""
    t = tasks.get("sciq")
    prep = prepare(t, t.items(4)[2:], enc)
    times = {}
    for shared in (True, False):
        t0 = time.perf_counter()
        for p in prep:
            mc.score_mc(gguf_model, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"], shared=shared)
        times[shared] = time.perf_counter() - t0
    print(f"shared {times[True]:.2f}s vs per-choice {times[False]:.2f}s: x{times[False] / times[True]:.2f}")
    assert times[True] < times[False] * 1.2


def test_llama_streams_give_the_per_choice_passes_bits(gguf_model, prepared):
    """llama.cpp shares the context through one KV stream per choice and decodes all continuations
    in one batch; each stream's cells lie as in a per-choice full pass, so every logit row the
    scores use (context rows, continuation rows but the last) is the same float, not merely close."""
    for name, prep in prepared.items():
        for p in prep:
            ctx, conts = p["ctxs"][0], p["conts"]
            c1, o1 = mc.shared_logits(gguf_model, ctx, conts, batched=True)
            c2, o2 = mc.full_logits(gguf_model, ctx, conts)
            np.testing.assert_array_equal(c1, c2)
            for a, b, c in zip(o1, o2, conts):
                assert a.shape == b.shape == (len(c), gguf_model.vocab_size)
                np.testing.assert_array_equal(a[: len(c) - 1], b[: len(c) - 1])
    assert gguf_model._mc_streams is not None and gguf_model._mc_streams.n_seq >= 2


def test_llama_streams_chunk_long_continuations_and_grow_for_more_choices(gguf_model, enc):
    """Five choices (the stream context is rebuilt with five streams) whose padded batch exceeds
    n_batch (512): decoded in chunks of whole positions, still the per-choice passes' bits."""
    ctx = enc("Question: which of these is the longest sentence?\nAnswer:")
    words = "the quick brown fox jumps over the lazy dog and keeps running through the field ".split()
    conts = [enc(" " + " ".join(words * r)[: 6 * n], bos=False) for r, n in
             ((10, 130), (1, 2), (12, 150), (3, 40), (14, 170))]
    k, L = len(conts), max(map(len, conts))
    assert k * L > 512 and len(set(map(len, conts))) == k
    c1, o1 = mc.shared_logits(gguf_model, ctx, conts, batched=True)
    c2, o2 = mc.full_logits(gguf_model, ctx, conts)
    assert gguf_model._mc_streams.n_seq == 5
    np.testing.assert_array_equal(c1, c2)
    for a, b, c in zip(o1, o2, conts):
        np.testing.assert_array_equal(a[: len(c) - 1], b[: len(c) - 1])


def test_llama_single_continuation_is_one_full_pass(gguf_model, enc):
    ctx, cont = enc("The capital of France is"), enc(" Paris, a city", bos=False)
    c1, (o1,) = mc.shared_logits(gguf_model, ctx, [cont], batched=True)
    c2, (o2,) = mc.full_logits(gguf_model, ctx, [cont])
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(o1, o2)


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_hf_packed_forward_equals_per_choice_passes(which, smollm2_ref, gemma3_ref, prepared):
    """transformers: one forward of context + every choice under a tree mask (positions restart at
    the end of the context for each choice). Gemma 3 has sliding-window layers (window 512): the
    mask stands in for them while the packed positions fit the window, and beyond it the cache path
    is used."""
    from silentzone.backends import open_model
    from silentzone.bench.run import Encoder
    ref = smollm2_ref if which == "smollm2" else gemma3_ref
    model = open_model(ref.hf_dir, threads=2, name=which)
    e = Encoder(ref.tokenizer())
    t = tasks.get("sciq")
    for p in prepare(t, t.items(3), e):
        ctx, conts = p["ctxs"][0], p["conts"]
        assert model.packable(len(ctx) + max(map(len, conts)))
        c1, o1 = mc.shared_logits(model, ctx, conts, batched=True)
        c2, o2 = mc.full_logits(model, ctx, conts)
        np.testing.assert_allclose(c1, c2, atol=2e-4)
        for a, b in zip(o1, o2):
            np.testing.assert_allclose(a, b, atol=2e-4)
        a = mc.score_mc(model, ctx, conts, p["item"].gold, p["n_chars"], batched=True)
        b = mc.score_mc(model, ctx, conts, p["item"].gold, p["n_chars"], shared=False)
        np.testing.assert_allclose(a["ll"], b["ll"], atol=1e-4)
        assert (a["pred"], a["correct"], a["correct_norm"]) == (b["pred"], b["correct"], b["correct_norm"])
    win = model.model.config.get_text_config().sliding_window if which == "gemma3" else None
    if win:
        assert not model.packable(win + 1)


def test_batched_is_opt_in_and_the_default_path_is_the_sequential_one(gguf_model, prepared, monkeypatch):
    """The default shared path is the sequential one that made the shipped samples: llama.cpp's
    model context, no stream context built; SILENTZONE_MC_BATCHED=1 switches to the batched one and
    provenance records it."""
    from silentzone.provenance import record
    fresh = type(gguf_model).__new__(type(gguf_model))
    fresh.__dict__.update({k: v for k, v in gguf_model.__dict__.items() if k != "_mc_streams"})
    p = prepared["sciq"][0]
    monkeypatch.delenv("SILENTZONE_MC_BATCHED", raising=False)
    a = mc.score_mc(fresh, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"])
    assert getattr(fresh, "_mc_streams", None) is None and "mc_batched" not in record(config_hash="x")
    monkeypatch.setenv("SILENTZONE_MC_BATCHED", "1")
    b = mc.score_mc(fresh, p["ctxs"][0], p["conts"], p["item"].gold, p["n_chars"])
    assert fresh._mc_streams is not None and record(config_hash="x")["mc_batched"] is True
    np.testing.assert_array_equal(a["ll"], b["ll"])  # the F32 reference: the same bits either way


def _textbook():
    """perf/choice_logprobs.py's `textbook`: continuation_logprobs as first written, the whole
    float64 log-softmax [L, V], then the token's log-prob and the best other one's."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "perf" / "choice_logprobs.py"
    spec = importlib.util.spec_from_file_location("choice_logprobs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.textbook


def test_continuation_logprobs_has_the_full_log_softmax_bits(gguf_model, enc):
    """Only the token's and the best other token's log-probs are taken; the bits are the whole
    log-softmax's: on random rows (a tie of the token with the best other included: gap exactly 0)
    and on the real reference's logits of a PIQA item."""
    textbook = _textbook()
    rng = np.random.default_rng(3)
    for n_rows in (1, 2, 7):
        ctx = rng.normal(0, 4, (5, 1000)).astype(np.float32)
        cont_rows = rng.normal(0, 4, (n_rows, 1000)).astype(np.float32)
        cont = list(rng.integers(0, 1000, n_rows))
        ctx[-1, cont[0]] = ctx[-1, (cont[0] + 1) % 1000] = ctx[-1].max() + 1  # a tie at the top
        got, want = mc.continuation_logprobs(ctx, cont_rows, cont), textbook(ctx, cont_rows, cont)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert got[1][0] == 0.0
    t = tasks.get("piqa")
    p = prepare(t, t.items(1), enc)[0]
    ctx_ids, conts = p["ctxs"][0], p["conts"]
    ctx_logits, outs = mc.shared_logits(gguf_model, ctx_ids, conts)
    for o, c in zip(outs, conts):
        got, want = mc.continuation_logprobs(ctx_logits, o, c), textbook(ctx_logits, o, c)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
