"""On the real SmolLM2 reference: agreement with llama-perplexity, HF vs GGUF, the stores on real
quants, refusals, a failed quant, and the cohort driver. Quants are made on the fly into tmp_path.

Regenerate the numbers quoted in the report with `pytest -m slow tests/fidelity -s`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone.cli import main as cli_main
from silentzone.fidelity.corpora import corpus_text

pytestmark = pytest.mark.slow
CTX = 128


def _quantize(src: Path, out: Path, ftype: str) -> Path:
    from silentzone.llama_tools import run
    run("llama-quantize", str(src), str(out), ftype, "2")
    return out


@pytest.fixture(scope="module")
def quants(smollm2_ref, tmp_path_factory):
    d = tmp_path_factory.mktemp("fidelity-quants")
    return {t: _quantize(smollm2_ref.gguf, d / f"{t}.gguf", t) for t in ("Q4_0", "Q8_0")}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """About 12 windows of 128 tokens of the shipped wiki text (760 scored tokens)."""
    p = tmp_path_factory.mktemp("fidelity-text") / "wiki.txt"
    p.write_text(corpus_text("wiki")[:6400] + "\n", encoding="utf-8")
    return p


def _kld_json(capsys, *args) -> dict:
    assert cli_main(["kld", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _llama_perplexity_kld(ref_gguf, cand_gguf, text, ctx, tmp) -> dict:
    from silentzone.llama_tools import run
    base = tmp / "base.kld"
    run("llama-perplexity", "-m", str(ref_gguf), "-f", str(text), "-c", str(ctx), "-b", str(ctx),
        "--kl-divergence-base", str(base), threads=2)
    p = run("llama-perplexity", "-m", str(cand_gguf), "-f", str(text), "-c", str(ctx), "-b", str(ctx),
            "--kl-divergence-base", str(base), "--kl-divergence", threads=2)
    log = p.stdout + p.stderr
    num = r"([-+]?[0-9.]+)"
    grab = {"kld_mean": rf"Mean    KLD:\s+{num}", "kld_median": rf"Median  KLD:\s+{num}",
            "kld_p99": rf"99\.0%   KLD:\s+{num}", "same_top_p": rf"Same top p:\s+{num}",
            "ppl_ratio": rf"Mean PPL\(Q\)/PPL\(base\)\s+:\s+{num}", "ppl_ref": rf"Mean PPL\(base\)\s+:\s+{num}"}
    return {k: float(re.search(v, log).group(1)) for k, v in grab.items()}


def test_kld_agrees_with_llama_perplexity(smollm2_ref, quants, text_file, tmp_path, capsys):
    ours = _kld_json(capsys, "--reference", smollm2_ref.gguf, "--candidate", quants["Q4_0"],
                     "--text", text_file, "--ctx", CTX)
    theirs = _llama_perplexity_kld(smollm2_ref.gguf, quants["Q4_0"], text_file, CTX, tmp_path)
    print(f"\nQ4_0 ctx {CTX}, {ours['n_tokens']} tokens: silentzone kld_mean {ours['kld_mean']:.6f} "
          f"top1 {100 * ours['top1_agreement']:.3f}% ppl_ratio {ours['ppl_ratio']:.5f} | "
          f"llama-perplexity {theirs['kld_mean']:.6f} {theirs['same_top_p']:.3f}% {theirs['ppl_ratio']:.5f}")
    assert ours["n_windows"] >= 8 and ours["n_tokens"] == ours["n_windows"] * (CTX - 1 - CTX // 2)
    assert ours["kld_mean"] == pytest.approx(theirs["kld_mean"], rel=0.02)
    assert abs(100 * ours["top1_agreement"] - theirs["same_top_p"]) < 1.0
    assert ours["ppl_ref"] == pytest.approx(theirs["ppl_ref"], rel=1e-3)
    assert ours["ppl_ratio"] == pytest.approx(theirs["ppl_ratio"], rel=5e-3)
    assert ours["kld_mean"] > 0.05  # a real Q4_0 displacement, not two copies of one model


def test_hf_candidate_against_gguf_reference(smollm2_ref, text_file, capsys):
    s = _kld_json(capsys, "--reference", smollm2_ref.gguf, "--candidate", smollm2_ref.hf_dir,
                  "--text", text_file, "--ctx", CTX)
    print(f"\nHF fp32 vs GGUF F32 of the same weights: kld_mean {s['kld_mean']:.2e}, "
          f"top1 {s['top1_agreement']:.4f}")
    assert 0 <= s["kld_mean"] < 5e-5 and s["kld_max"] < 1e-3
    assert s["top1_agreement"] > 0.99
    assert s["ppl_ratio"] == pytest.approx(1.0, abs=1e-3)


def _tiny(out: Path, tokenizer_dir: Path, vocab: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def test_vocab_or_token_mismatch_is_refused_with_one_line(smollm2_ref, gemma3_ref, text_file, tmp_path,
                                                          capsys):
    other_vocab = _tiny(tmp_path / "v50000", smollm2_ref.hf_dir, 50000)
    other_ids = _tiny(tmp_path / "gemma-tok", gemma3_ref.hf_dir, 49152)  # same size, other tokenizer
    capsys.readouterr()
    assert cli_main(["kld", "--reference", str(smollm2_ref.gguf), "--candidate", str(other_vocab),
                     "--text", str(text_file), "--ctx", str(CTX)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]  # (+ load bars)
    assert len(err) == 1 and "vocabulary size 50000 differs from the reference's 49152" in err[0], err
    assert cli_main(["kld", "--reference", str(smollm2_ref.gguf), "--candidate", str(other_ids),
                     "--text", str(text_file), "--ctx", str(CTX)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "token ids differ from the reference's at probe token" in err[0], err


@pytest.fixture(scope="module")
def real_store(smollm2_ref, text_file, tmp_path_factory):
    """Exact + compact capture of the text at ctx 128 by the F32 reference in llama.cpp."""
    from silentzone.fidelity.capture import capture
    from silentzone.fidelity.corpora import tokenize_text
    ids = tokenize_text(smollm2_ref.gguf, text_file.read_text()[:-1])
    return capture(smollm2_ref.gguf, ids, CTX, tmp_path_factory.mktemp("store") / "s",
                   kinds=("exact", "compact"), threads=2)


def test_stores_on_real_quants(real_store, quants, smollm2_ref, text_file):
    from silentzone.fidelity.capture import open_scorer
    from silentzone.fidelity.kernels import summarize
    from silentzone.fidelity.score import score_store, score_text
    from silentzone.fidelity.store import llama_base_bytes
    st = real_store
    direct, _ = score_text(smollm2_ref.gguf, quants["Q4_0"], text_file.read_text()[:-1], CTX)
    assert st.tokens_hash == direct["tokens_hash"]
    lines = []
    for q, path in quants.items():
        m = open_scorer(path, n_ctx=CTX, threads=2)
        exact = summarize(score_store(m, st, "exact"))
        compact = summarize(score_store(m, st, "compact"))
        lines.append(f"{q}: exact kld_mean {exact['kld_mean']:.6f}, compact {compact['kld_mean']:.6f} "
                     f"({compact['kld_mean'] / exact['kld_mean'] - 1:+.4f}); js {exact['js_mean']:.6f} vs "
                     f"{compact['js_mean']:.6f}")
        # the compact store (k = 128 + 64 sampled tail tokens) within 1% of the exact one
        assert compact["kld_mean"] == pytest.approx(exact["kld_mean"], rel=0.01)
        assert compact["js_mean"] == pytest.approx(exact["js_mean"], rel=0.02)
        for key in ("top1_agreement", "ppl_quant", "ppl_ref", "dp_rms"):   # exact in both stores
            assert compact[key] == pytest.approx(exact[key], rel=1e-6)
        if q == "Q4_0":  # float16 exact store vs float32 in-memory reference
            assert exact["kld_mean"] == pytest.approx(direct["kld_mean"], rel=1e-3)
            assert exact["top1_agreement"] == direct["top1_agreement"]
    ratio = llama_base_bytes(st.n_vocab, CTX, st.n_windows) / st.nbytes("compact")
    print("\n" + "\n".join(lines) + f"\ncompact store {st.nbytes('compact')} bytes, exact "
          f"{st.nbytes('exact')}, llama.cpp base file {llama_base_bytes(st.n_vocab, CTX, st.n_windows)}: "
          f"{ratio:.0f}x smaller")
    assert ratio > 50


def test_cohort_scores_skips_done_and_marks_nonfinite_failed(smollm2_ref, quants, tmp_path, monkeypatch):
    """A two-quant cohort through capture_study/score_cohort: Q4_0 scores, an HF quant with a NaN
    weight is marked failed with the reason, and a second run does no work."""
    import torch
    import silentzone.paths as paths
    from silentzone.config import load
    from silentzone.fidelity import capture as cap
    from silentzone.fidelity import score as sc
    from silentzone.provenance import record
    from silentzone.tables import FIDELITY, QUANTS, read_table, write_table
    monkeypatch.setattr(paths, "study_dir", lambda study, profile: tmp_path / study / profile)
    base = load(paths.CONFIGS / "smollm2.yaml", "smoke")
    study = replace(base, study="fidtest", quants=tuple(q for q in base.quants if q.id in ("Q4_0", "Q8_0")),
                    corpora=("technical",), contexts=(CTX,),
                    profile=replace(base.profile, corpus_tokens=3 * CTX + 5))
    broken = tmp_path / "broken"
    model = smollm2_ref.load_hf()
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(broken / "hf")
    (broken / "artifact.json").write_text(json.dumps({"format": "hf", "dir": "hf"}))
    rows = [{"study": "fidtest", "quant_id": q, "method": "gguf", "recipe": "{}", "recipe_hash": "x",
             "requested_type": q, "tensor_types": "{}", "bpw": 4.5, "bytes": 1, "sha256": "x",
             "tool_versions": "{}", "wall_s": 1.5, "status": "ok", "reason": ""} for q in ("Q4_0", "Q8_0")]
    write_table(pd.DataFrame(rows), QUANTS, tmp_path / "fidtest" / "smoke" / "quants.csv", record())
    cap.capture_study(study, threads=2)
    table = sc.score_cohort(study, {"Q4_0": quants["Q4_0"], "Q8_0": broken}, threads=2)
    t = read_table(tmp_path / "fidtest" / "smoke" / "fidelity.csv", FIDELITY)
    assert len(t) == len(table) == 2 * len(sc.METRICS)
    ok = t[t["quant_id"] == "Q4_0"].set_index("metric")
    assert (ok["status"] == "ok").all() and ok.loc["kld_mean", "value"] > 0.05
    assert (ok["n_tokens"] == 3 * (CTX - 1 - CTX // 2)).all()
    bad = t[t["quant_id"] == "Q8_0"]
    assert (bad["status"] == "failed").all() and bad["value"].isna().all()
    assert bad["reason"].str.contains("non-finite logits").all()
    kld = np.load(tmp_path / "fidtest" / "smoke" / "fidelity" / "Q4_0" / "technical" / f"ctx={CTX}-half" / "kld.npy")
    assert kld.shape == (3, CTX - 1 - CTX // 2)
    assert kld.mean() == pytest.approx(ok.loc["kld_mean", "value"], rel=1e-5)
    # how each quant ran: the GGUF on llama.cpp with its default F16 cache, the saved float32 HF model
    # on transformers in float32 (both opened on the CPU)
    runtime = json.loads((tmp_path / "fidtest" / "smoke" / "fidelity.csv.provenance.json").read_text())["runtime"]
    assert {q: (r["device"], r["engine"], r["kv_cache"]) for q, r in runtime.items()} == {
        "Q4_0": ("cpu", "llama.cpp", "f16"), "Q8_0": ("cpu", "transformers", "float32")}
    opened = []
    monkeypatch.setattr(sc, "open_scorer", lambda *a, **k: opened.append(a) or pytest.fail("re-scored"))
    again = sc.score_cohort(study, {"Q4_0": quants["Q4_0"], "Q8_0": broken})
    assert not opened and len(again) == len(t)


def test_capture_study_recaptures_a_store_made_from_other_corpus_tokens(smollm2_ref, tmp_path, monkeypatch):
    """The profile's corpus_tokens changed: the store at the same path was made from other tokens and
    must be captured again, not taken as finished (the bug that left data/smollm2's wiki-512 rows on
    a 2,048-token store after the default profile moved to 1,024). A third call does nothing."""
    import silentzone.paths as paths
    from silentzone.config import load
    from silentzone.fidelity import capture as cap
    from silentzone.fidelity.corpora import corpus_tokens
    monkeypatch.setattr(paths, "study_dir", lambda study, profile: tmp_path / study / profile)
    base = load(paths.CONFIGS / "smollm2.yaml", "smoke")
    small = replace(base, study="stale", corpora=("technical",), contexts=(CTX,),
                    profile=replace(base.profile, corpus_tokens=2 * CTX + 5))
    big = replace(small, profile=replace(small.profile, corpus_tokens=3 * CTX + 5))
    (st,) = cap.capture_study(small, threads=2)
    assert st.n_windows == 2
    (st,) = cap.capture_study(big, threads=2)
    assert st.n_windows == 3 and st.complete()
    assert st.meta["corpus_tokens_hash"] == corpus_tokens(smollm2_ref, "technical", 3 * CTX + 5)[1]
    assert not list(st.path.parent.glob("*.stale"))
    monkeypatch.setattr(cap, "capture", lambda *a, **k: pytest.fail("captured a finished store again"))
    (again,) = cap.capture_study(big, threads=2)
    assert again.tokens_hash == st.tokens_hash
