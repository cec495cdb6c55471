"""Divergent Token Metrics (silentzone.fidelity.divergent): hand-worked counts, the config key, a tiny
random Llama against itself, and the real SmolLM2 reference against two of its quants.

Regenerate the real-model numbers with `pytest -m slow tests/fidelity/test_divergent_tokens.py -s`.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from silentzone.fidelity.divergent import (argmax_tokens, divergent_counts, divergent_summary,
                                           first_divergent, prompt_cuts, reference_tokens,
                                           teacher_forced_argmax)


def _onehot_logits(tokens, V: int = 5) -> np.ndarray:
    """float32 [P, n, V] logits whose argmax is `tokens` (1.0 at the token, 0 elsewhere)."""
    tokens = np.asarray(tokens)
    z = np.zeros((*tokens.shape, V), dtype=np.float32)
    np.put_along_axis(z, tokens[..., None], 1.0, axis=-1)
    return z


def test_worked_example_fdt_and_sdt_by_hand():
    # 3 prompts, n = 4 positions each, vocabulary 5
    ref = np.array([[1, 2, 3, 4],    # prompt 0: the quant never diverges      -> FDT 4, 0 divergent
                    [0, 0, 0, 0],    # prompt 1: diverges at position 0 only   -> FDT 0, 1 divergent
                    [4, 3, 2, 1]])   # prompt 2: diverges at positions 2 and 3 -> FDT 2, 2 divergent
    cand_tokens = np.array([[1, 2, 3, 4],
                            [3, 0, 0, 0],
                            [4, 3, 0, 0]])
    cand = argmax_tokens(_onehot_logits(cand_tokens))
    np.testing.assert_array_equal(cand, cand_tokens)
    c = divergent_counts(ref, cand)
    np.testing.assert_array_equal(c["fdt"], [4, 0, 2])
    assert (c["n_divergent"], c["n_positions"], c["n_prompts"], c["n"]) == (3, 12, 3, 4)
    s = divergent_summary(c)
    # fdt_mean = (4 + 0 + 2) / 3 = 2; sdt_share = (0 + 1 + 2) / 12 = 0.25; n_tokens = 3 x 4
    assert s == {"fdt_mean": 2.0, "sdt_share": 0.25, "n_tokens": 12}
    # a diverged prompt that agrees again later still has its first divergence where it was
    assert first_divergent(np.array([[1, 2, 3]]), np.array([[1, 9, 3]])).tolist() == [1]


def test_never_diverging_gives_fdt_n_and_sdt_zero():
    ref = np.arange(12).reshape(3, 4) % 5
    s = divergent_summary(divergent_counts(ref, ref.copy()))
    assert s == {"fdt_mean": 4.0, "sdt_share": 0.0, "n_tokens": 12}


def test_diverging_at_position_zero_everywhere_gives_fdt_zero():
    ref = np.zeros((2, 3), dtype=np.int64)
    s = divergent_summary(divergent_counts(ref, ref + 1))
    assert s == {"fdt_mean": 0.0, "sdt_share": 1.0, "n_tokens": 6}


def test_ties_take_the_lowest_token_id_as_torch_and_numpy_do():
    import torch
    # row 0: tokens 1 and 3 tie at 2.0 -> 1; row 1: all equal -> 0; row 2: a float32 tie at the end
    z = np.array([[0.0, 2.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 7.5, 7.5]], dtype=np.float32)
    assert argmax_tokens(z).tolist() == [1, 0, 2]
    assert argmax_tokens(torch.from_numpy(z)).tolist() == [1, 0, 2] == np.argmax(z, -1).tolist()
    # a quant that ties the reference's token with a lower id diverges there; with a higher id it
    # does not: the tie rule decides
    ref = np.array([[3]])
    assert divergent_counts(ref, argmax_tokens(z[None, :1]))["n_divergent"] == 1   # argmax 1 != 3
    assert divergent_counts(np.array([[1]]), argmax_tokens(z[None, :1]))["n_divergent"] == 0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        first_divergent(np.zeros((2, 3)), np.zeros((2, 4)))


def test_prompt_cuts_keep_half_a_window_and_end_inside_it():
    # ctx 512, n 32: prompts of 256, 288, ..., 480 tokens (8 per window), the last continuation
    # ending at token 512
    assert prompt_cuts(512, 32) == list(range(256, 481, 32))
    assert prompt_cuts(16, 8) == [8]           # exactly half a window: one prompt
    assert prompt_cuts(17, 8) == [9]           # ctx // 2 = 8 <= 9 = 17 - 8
    for bad in (0, -3, 9):
        with pytest.raises(ValueError, match="divergent_tokens"):
            prompt_cuts(16, bad)


# ----------------------------------------------------------------------------- config key

def _config(tmp_path, fidelity: str):
    from silentzone.paths import CONFIGS
    text = (CONFIGS / "smollm2.yaml").read_text()
    p = tmp_path / "study.yaml"
    p.write_text(text + "\n" + fidelity + "\n")
    return p


@pytest.mark.parametrize("value,msg", [
    ("0", "must be > 0 tokens, got 0"),
    ("-5", "must be > 0 tokens, got -5"),
    ("1000", "must be at most half of every context length"),
    ("true", "must be int"),
    ("8.5", "must be int"),
])
def test_config_refuses_bad_lengths_with_one_line(tmp_path, value, msg):
    from silentzone.config import ConfigError, load
    with pytest.raises(ConfigError) as e:
        load(_config(tmp_path, f"fidelity:\n  divergent_tokens: {value}"))
    assert "fidelity.divergent_tokens" in str(e.value) and msg in str(e.value)
    assert "\n" not in str(e.value)


def test_config_unknown_fidelity_key_and_cli_validate(tmp_path, capsys):
    from silentzone.cli import main
    from silentzone.config import ConfigError, load
    with pytest.raises(ConfigError, match=r"fidelity\.divergent: unknown key"):
        load(_config(tmp_path, "fidelity:\n  divergent: 32"))
    assert main(["validate", str(_config(tmp_path, "fidelity:\n  divergent_tokens: 0"))]) == 2
    assert "fidelity.divergent_tokens: must be > 0" in capsys.readouterr().err


def test_config_key_is_opt_in_and_leaves_the_shipped_hash_alone(tmp_path):
    from silentzone.config import load
    from silentzone.paths import CONFIGS
    shipped = load(CONFIGS / "smollm2.yaml")
    assert shipped.fidelity.divergent_tokens == 0  # off unless the file asks
    on = load(_config(tmp_path, "fidelity:\n  divergent_tokens: 32"))
    assert on.fidelity.divergent_tokens == 32 and on.config_hash != shipped.config_hash
    (tmp_path / "plain").mkdir()
    assert load(_config(tmp_path / "plain", "")).config_hash == shipped.config_hash


# ----------------------------------------------------------------------------- analysis

def test_rows_flow_into_the_cohort_table_oriented_higher_is_better_for_fdt():
    # the shipped SmolLM2 tables plus fdt_mean / sdt_share rows for every quant at wiki 512, with
    # the store's tokens_hash (as score_cohort writes them): they become cohort columns like any
    # variant, and fdt_mean reads as higher-is-better (figures flip its rho), sdt_share as lower
    from analysis import cohort
    from silentzone.paths import data_dir
    d = data_dir("smollm2")
    quants, fidelity, samples = (pd.read_csv(d / f"{t}.csv") for t in ("quants", "fidelity", "samples"))
    kld = fidelity[(fidelity["corpus"] == "wiki") & (fidelity["ctx"] == 512) & (fidelity["metric"] == "kld_mean")]
    n, P = 32, 16
    extra = pd.concat([kld.assign(metric="fdt_mean", value=n / (1 + 10 * kld["value"]), n_tokens=n * P),
                       kld.assign(metric="sdt_share", value=(kld["value"] * 3).clip(upper=1), n_tokens=n * P)])
    table = cohort.cohort_table(samples, pd.concat([fidelity, extra]), quants, corpus="wiki", ctx=512)
    assert {"fdt_mean", "sdt_share"} <= set(cohort.metric_columns(table))
    assert cohort.oriented("fdt_mean") == -1 and cohort.oriented("sdt_share") == 1
    assert cohort.oriented("kld_mean") == 1 and cohort.oriented("top1_agreement") == -1
    # a monotone decreasing transform of KLD: its Spearman rho with the score is KLD's, sign flipped
    from analysis import stats
    r_kld, _ = stats.spearman(table["kld_mean"], table["score"])
    r_fdt, _ = stats.spearman(table["fdt_mean"], table["score"])
    assert r_fdt == pytest.approx(-r_kld, abs=1e-12)


# ----------------------------------------------------------------------------- tiny model

def test_tiny_llama_against_itself_never_diverges(tiny_llama_dir):
    # the same randomly initialised model as reference and as "quant": its teacher-forced argmax
    # on its own greedy continuation is that continuation (SDT 0, FDT n), although the greedy
    # decode runs on the KV cache and the teacher forcing in one full pass
    from silentzone.backends import open_model
    from silentzone.fidelity.store import make_windows
    m = open_model(tiny_llama_dir, name="tiny")
    ids = m.tokenize("The quick brown fox jumps over the lazy dog. " * 12)
    ctx, n = 32, 8
    windows = make_windows(ids, ctx, m.bos())[:2]
    cuts = prompt_cuts(ctx, n)  # [16, 24]
    ref = reference_tokens(m, windows, cuts, n)
    assert ref.shape == (len(windows) * len(cuts), n)
    cand = teacher_forced_argmax(m, windows, cuts, ref)
    s = divergent_summary(divergent_counts(ref, cand))
    assert s == {"fdt_mean": float(n), "sdt_share": 0.0, "n_tokens": ref.size}


# ----------------------------------------------------------------------------- real SmolLM2

CTX, N = 48, 8


def _argmax_loop(model, prompts, conts):
    """Per prompt, the first index where model's argmax (Model.logits of prompt + continuation, one
    full pass, no cache) leaves the continuation (len when never), and the number of such positions:
    a plain loop, independent of divergent.py."""
    fdt, div = [], 0
    for p, cont in zip(prompts, conts):
        z = model.logits(list(p) + list(cont))
        first = None
        for j, tok in enumerate(cont):
            if int(np.argmax(z[len(p) - 1 + j])) != tok:
                div += 1
                first = j if first is None else first
        fdt.append(len(cont) if first is None else first)
    return fdt, div


@pytest.mark.slow
def test_real_smollm2_reference_vs_q8_0_and_q2_k(smollm2_ref, tmp_path, monkeypatch, capsys):
    """One llama.cpp thread per model: on a busy 2-core machine two threads wait at every barrier of a
    one-token decode (measured 30x slower). The cohort driver with fidelity.divergent_tokens on (capture_study computes the reference's
    continuations, score_cohort writes fdt_mean and sdt_share beside the KLD rows) on SmolLM2 Q8_0
    and Q2_K: 2 windows of 48 tokens of the technical corpus, n = 8: prompts of 24, 32 and 40
    tokens, 6 prompts, 48 positions. Checked against a plain loop over Model.logits: the
    reference's own full passes reproduce its greedy tokens (so greedy decoding without a cache
    gives the same continuations), and each quant's counts equal the loop's."""
    import time
    import silentzone.paths as paths
    from silentzone.backends import open_model
    from silentzone.config import load
    from silentzone.fidelity import capture as cap
    from silentzone.fidelity import score as sc
    from silentzone.fidelity.divergent import load_reference
    from silentzone.llama_tools import run
    from silentzone.provenance import record
    from silentzone.tables import FIDELITY, QUANTS, read_table, write_table
    t0 = time.perf_counter()
    monkeypatch.setattr(paths, "study_dir", lambda study, profile: tmp_path / study / profile)
    base = load(paths.CONFIGS / "smollm2.yaml", "smoke")
    study = replace(base, study="dtm", quants=tuple(q for q in base.quants if q.id in ("Q8_0", "Q2_K")),
                    corpora=("technical",), contexts=(CTX,), fidelity=replace(base.fidelity, divergent_tokens=N),
                    profile=replace(base.profile, corpus_tokens=2 * CTX + 5))
    assert {q.id for q in study.quants} == {"Q8_0", "Q2_K"}
    arts = {}
    for t in ("Q8_0", "Q2_K"):
        arts[t] = tmp_path / f"{t}.gguf"
        run("llama-quantize", str(smollm2_ref.gguf), str(arts[t]), t, "2")
    rows = [{"study": "dtm", "quant_id": q, "method": "gguf", "recipe": "{}", "recipe_hash": "x",
             "requested_type": q, "tensor_types": "{}", "bpw": 4.5, "bytes": 1, "sha256": "x",
             "tool_versions": "{}", "wall_s": 1.5, "status": "ok", "reason": ""} for q in arts]
    write_table(pd.DataFrame(rows), QUANTS, tmp_path / "dtm" / "smoke" / "quants.csv", record())
    (st,) = cap.capture_study(study, threads=1)
    ref = load_reference(st, N)
    cuts = prompt_cuts(CTX, N)
    P = st.n_windows * len(cuts)
    assert cuts == [24, 32, 40] and ref.shape == (P, N) == (6, N)
    table = sc.score_cohort(study, arts, threads=1)
    assert len(read_table(tmp_path / "dtm" / "smoke" / "fidelity.csv", FIDELITY)) == len(table)
    t = table.set_index(["quant_id", "metric"])  # the values before the CSV's decimal rounding
    assert len(t) == 2 * (len(sc.METRICS) + 2)
    assert (t.loc[(slice(None), ["fdt_mean", "sdt_share"]), "n_tokens"] == P * N).all()
    assert t["tokens_hash"].nunique() == 1  # the same windows as the KLD rows: analysis joins them

    prompts = [st.windows()[i, :c] for i in range(st.n_windows) for c in cuts]
    R = open_model(smollm2_ref.gguf, n_ctx=CTX, threads=1, name="reference")
    assert _argmax_loop(R, prompts, ref) == ([N] * P, 0), "full passes leave the KV-cache greedy decode"
    got = {}
    for q, path in arts.items():
        fdt, div = _argmax_loop(open_model(path, n_ctx=CTX, threads=1, name=q), prompts, ref)
        assert t.loc[(q, "sdt_share"), "value"] == div / (P * N)
        assert t.loc[(q, "fdt_mean"), "value"] == sum(fdt) / P
        counts = json.loads((tmp_path / "dtm" / "smoke" / "fidelity" / q / "technical" /
                             f"ctx={CTX}-half" / f"divergent-{N}.json").read_text())
        assert (counts["n_divergent"], counts["fdt_sum"], counts["n_positions"]) == (div, sum(fdt), P * N)
        got[q] = (sum(fdt) / P, div / (P * N), t.loc[(q, "kld_mean"), "value"],
                  t.loc[(q, "top1_agreement"), "value"])
    with capsys.disabled():
        print(f"\nSmolLM2, technical ctx {CTX}, n {N}, {P} prompts ({time.perf_counter() - t0:.0f} s): "
              + "; ".join(f"{q} fdt_mean {f:.3f} sdt_share {s:.4f} kld_mean {k:.5f} top1 {a:.4f}"
                          for q, (f, s, k, a) in got.items()))
    # monotone sanity: the 8-bit quant diverges later and less often than the 2-bit one
    assert got["Q8_0"][0] > got["Q2_K"][0] and got["Q8_0"][1] < got["Q2_K"][1]
