"""GGUF quants with the real llama.cpp tools on the real SmolLM2 reference (seconds each)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest


def test_q8_0_is_near_lossless_and_read_back_exactly(make, kld):
    r = make("Q8_0", "gguf", type="Q8_0")
    assert r["status"] == "ok", r["reason"]
    # 30 layers x 7 matrices + the (tied) token embedding = 211 matrices, all q8_0.
    assert json.loads(r["tensor_types"]) == {"q8_0": 211}
    # q8_0 block: 32 int8 weights + one f16 scale = 34 bytes -> 34 * 8 / 32 = 8.5 bits per weight.
    assert r["bpw"] == 8.5 and r["bpw_all"] == 8.5
    assert r["fallback_frac"] == 0.0 and r["main_type"] == "q8_0"
    art = Path(r["artifact"])
    assert json.loads((art / "artifact.json").read_text()) == {"format": "gguf", "file": "model.gguf"}
    assert r["bytes"] == (art / "model.gguf").stat().st_size
    assert 0 < kld(art) < 0.02
    assert 0 < r["check_kld"] < 0.05


def test_q2_k_is_worse_and_records_its_fallback(make, kld):
    q8, q2 = make("Q8_0", "gguf", type="Q8_0"), make("Q2_K", "gguf", type="Q2_K")
    assert q2["status"] == "ok", q2["reason"]
    # hidden size 576 is not a multiple of 256: most q2_k matrices fall back to a legacy type.
    assert q2["fallback_tensors"] > 100 and q2["fallback_frac"] > 0.5 and q2["main_type"] != "q2_k"
    assert q2["bpw"] < q8["bpw"] and q2["bytes"] < q8["bytes"]
    assert kld(q2["artifact"]) > 5 * kld(q8["artifact"])


def test_imatrix_quant_uses_the_calibration_corpus(make, qroot, smollm2_ref):
    r = make("Q4_K_M-imat-wiki", "gguf", type="Q4_K_M", imatrix="wiki")
    assert r["status"] == "ok", r["reason"]
    recipe = json.loads(r["recipe"])
    # chunks default to the profile's calib_samples (2 here); chunk length is llama-imatrix's 512.
    assert recipe["imatrix"] == "wiki" and recipe["imatrix_chunks"] == 2 and recipe["imatrix_ctx"] == 512
    assert (qroot / smollm2_ref.name / "imatrix" / "imatrix-wiki-c2x512.gguf").is_file()
    assert "requested_type" in r and r["requested_type"] == "Q4_K_M"
    assert r["fallback_tensors"] > 0 and r["main_type"] == "q5_0"   # what is really in the file
    plain = make("Q4_K_M", "gguf", type="Q4_K_M")
    assert plain["sha256"] != r["sha256"] and plain["tensor_types"] == r["tensor_types"]


def test_tensor_type_override(make):
    r = make("Q4_0-q8emb", "gguf", type="Q4_0", token_embedding_type="q8_0", output_type="q8_0")
    assert r["status"] == "ok", r["reason"]
    from gguf import GGUFReader
    types = {t.name: t.tensor_type.name for t in GGUFReader(Path(r["artifact"]) / "model.gguf").tensors}
    assert types["token_embd.weight"] == "Q8_0"   # tied embeddings: no separate output.weight
    assert types["blk.0.attn_q.weight"] == "Q4_0"
    assert json.loads(r["tensor_types"]) == {"q4_0": 210, "q8_0": 1}


def test_llama_quantize_is_bit_reproducible(smollm2_ref, tmp_path):
    from silentzone.quantize import gguf
    from silentzone.quantize.manifest import sha256_file
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    gguf.quantize(smollm2_ref.gguf, a, {"type": "Q4_0"}, threads=2)
    gguf.quantize(smollm2_ref.gguf, b, {"type": "Q4_0"}, threads=1)
    assert sha256_file(a) == sha256_file(b)


def test_reuse_is_a_no_op(make, qstudy, qroot, smollm2_ref):
    from silentzone.config import QuantCfg
    from silentzone.quantize import make_quant
    first = make("Q8_0", "gguf", type="Q8_0")
    f = Path(first["artifact"]) / "model.gguf"
    mtime = f.stat().st_mtime_ns
    t0 = time.time()
    again = make_quant(qstudy, QuantCfg("Q8_0", "gguf", {"type": "Q8_0"}), smollm2_ref, root=qroot)
    assert time.time() - t0 < 2.0
    assert again["reused"] is True and again["sha256"] == first["sha256"]
    assert again["recipe_hash"] == first["recipe_hash"] and f.stat().st_mtime_ns == mtime


def test_failure_is_recorded_and_the_next_quant_runs(qstudy, qroot, smollm2_ref):
    from dataclasses import replace
    from silentzone.config import QuantCfg
    from silentzone.quantize import artifact_dir, make_cohort
    bad = QuantCfg("IQ2_XXS-noimat", "gguf", {"type": "IQ2_XXS"})   # llama-quantize wants an imatrix
    good = QuantCfg("Q5_0", "gguf", {"type": "Q5_0"})
    frame = make_cohort(replace(qstudy, quants=(bad, good)), root=qroot, reference=smollm2_ref,
                        write=False, progress=False)
    rows = frame.set_index("quant_id")
    assert rows.loc["IQ2_XXS-noimat", "status"] == "failed"
    assert "requires an imatrix" in rows.loc["IQ2_XXS-noimat", "reason"]
    assert "\n" not in rows.loc["IQ2_XXS-noimat", "reason"]
    assert rows.loc["Q5_0", "status"] == "ok"
    # nothing is kept for the failed quant (no finished dir, no temp dir): the next run retries.
    failed_dir = artifact_dir(smollm2_ref, "IQ2_XXS-noimat", rows.loc["IQ2_XXS-noimat", "recipe_hash"], qroot)
    assert not failed_dir.exists()
    assert not list(failed_dir.parent.glob(".IQ2_XXS-noimat-*"))


def test_leftover_temp_dir_is_never_taken_for_finished(qstudy, qroot, smollm2_ref):
    from silentzone.config import QuantCfg
    from silentzone.quantize import artifact_dir, make_quant, manifest as mf
    q = QuantCfg("Q4_1", "gguf", {"type": "Q4_1"})
    recipe = mf.effective_recipe("gguf", {"type": "Q4_1"}, qstudy.profile)
    final = artifact_dir(smollm2_ref, "Q4_1", mf.recipe_hash(recipe, smollm2_ref, "gguf"), qroot)
    final.parent.mkdir(parents=True, exist_ok=True)
    # a crashed build (pid 999999 is not running) that even wrote a manifest claiming "ok"
    stale = final.with_name(f".{final.name}.tmp-999999")
    stale.mkdir()
    (stale / "artifact.json").write_text('{"format": "gguf", "file": "model.gguf"}')
    (stale / "manifest.json").write_text('{"status": "ok", "sha256": "bogus"}')
    (stale / "model.gguf").write_bytes(b"GGUF half written")
    r = make_quant(qstudy, q, smollm2_ref, root=qroot)
    assert r["status"] == "ok" and r["reused"] is False and r["sha256"] != "bogus"
    assert not stale.exists() and final.is_dir()
    # a final dir whose manifest was lost is rebuilt, not trusted
    (final / "manifest.json").unlink()
    r2 = make_quant(qstudy, q, smollm2_ref, root=qroot)
    assert r2["reused"] is False and r2["sha256"] == r["sha256"]


def test_imatrix_quant_bytes_do_not_depend_on_where_the_cache_lives(smollm2_ref, tmp_path):
    """llama-imatrix records its -f argument and llama-quantize its --imatrix argument in the GGUF
    metadata: with absolute paths, the same recipe gave other bytes under another $SILENTZONE_HOME.
    Both now run in the imatrix folder with bare names, so two homes give identical files."""
    from gguf import GGUFReader
    from silentzone.quantize import gguf
    from silentzone.quantize.manifest import sha256_file
    out = {}
    for home in (tmp_path / "a", tmp_path / "somewhere" / "else" / "b"):
        imat = gguf.imatrix(smollm2_ref, "wiki", 1, home / "imatrix", threads=2)
        q = home / "q.gguf"
        gguf.quantize(smollm2_ref.gguf, q, {"type": "Q4_K_M"}, imatrix_file=imat, threads=2)
        out[home] = (sha256_file(imat), sha256_file(q), q)
    (ia, qa, fa), (ib, qb, _) = out.values()
    assert ia == ib and qa == qb
    meta = {f.name: bytes(f.parts[f.data[0]]).decode() for f in GGUFReader(fa).fields.values()
            if f.name in ("quantize.imatrix.file", "quantize.imatrix.dataset")}
    assert meta == {"quantize.imatrix.file": "imatrix-wiki-c1x512.gguf",
                    "quantize.imatrix.dataset": "imatrix-wiki-c1x512.txt"}, meta
