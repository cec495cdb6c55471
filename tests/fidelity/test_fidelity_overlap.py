"""llama.cpp on the CPU with a core to spare: capture encodes window j, score_store scores window j
and score_text computes window j's metrics in a helper thread while llama.cpp decodes window j+1.
The results must be the bytes and floats of the sequential path (SILENTZONE_OVERLAP=0), errors
raised in the helper must surface with their one-line message, and a store must stay resumable.
Real SmolLM2 F32 reference and a Q4_0 made by llama.cpp's quantizer; one llama.cpp thread, so that
a core is free on the 2-core machines this runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
CTX = 64


@pytest.fixture(scope="module")
def q4(smollm2_ref, tmp_path_factory):
    from silentzone.llama_tools import run
    out = tmp_path_factory.mktemp("overlap") / "Q4_0.gguf"
    run("llama-quantize", str(smollm2_ref.gguf), str(out), "Q4_0", "2")
    return out


@pytest.fixture(scope="module")
def ids(smollm2_ref):
    from silentzone.fidelity.corpora import corpus_text, tokenize_text
    return tokenize_text(smollm2_ref.gguf, corpus_text("wiki")[:2400])


@pytest.fixture(scope="module")
def models(smollm2_ref, q4):
    from silentzone.fidelity.capture import open_scorer, overlaps
    R = open_scorer(smollm2_ref.gguf, n_ctx=CTX, threads=1, name="reference")
    Q = open_scorer(q4, n_ctx=CTX, threads=1, name="Q4_0")
    if not (overlaps(R) and overlaps(Q)):
        pytest.fail(f"one llama.cpp thread should leave a core free here ({os.cpu_count()} cores)")
    return R, Q


def _files(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(d.iterdir()) if f.is_file()}


def test_overlapped_capture_and_scoring_equal_the_sequential_path(models, ids, tmp_path, monkeypatch):
    from silentzone.fidelity.capture import capture
    from silentzone.fidelity.score import score_store
    R, Q = models
    stores, scores = {}, {}
    for mode in ("0", "1"):
        monkeypatch.setenv("SILENTZONE_OVERLAP", mode)
        st = capture(R, ids, CTX, tmp_path / f"store-{mode}", kinds=("exact", "compact"))
        stores[mode] = st
        scores[mode] = {kind: score_store(Q, st, kind) for kind in ("exact", "compact")}
    assert stores["1"].n_windows >= 6
    a, b = _files(stores["0"].path), _files(stores["1"].path)
    assert a.keys() == b.keys() and len(a) == 2 * stores["1"].n_windows + 2
    assert all(a[k] == b[k] for k in a)  # every window file, tokens.npy and meta.json: same bytes
    for kind in ("exact", "compact"):
        for metric, v in scores["0"][kind].items():
            np.testing.assert_array_equal(v, scores["1"][kind][metric], err_msg=f"{kind} {metric}")


def test_overlapped_score_text_equals_the_sequential_path(models, smollm2_ref, q4, monkeypatch):
    from silentzone.fidelity.corpora import corpus_text
    from silentzone.fidelity.score import score_text
    text = corpus_text("wiki")[:2400]
    out = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("SILENTZONE_OVERLAP", mode)
        out[mode] = score_text(smollm2_ref.gguf, q4, text, CTX, threads=1)
    s0, s1 = out["0"][0], out["1"][0]
    for key in ("kld_mean", "kld_p99", "top1_agreement", "ppl_ref", "ppl_quant", "n_tokens"):
        assert s0[key] == s1[key], key
    for metric, v in out["0"][1].items():
        np.testing.assert_array_equal(v, out["1"][1][metric])


def test_an_error_in_the_helper_surfaces_and_finished_windows_stay(models, ids, tmp_path, monkeypatch):
    """Window 3's logits turn non-finite: capture stops with the store's one-line error, the windows
    written before it are kept (done), and a second capture resumes from window 3."""
    from silentzone.fidelity import capture as cap
    from silentzone.fidelity.store import Store, StoreError
    R, _ = models
    monkeypatch.setenv("SILENTZONE_OVERLAP", "1")
    real = cap.window_logits
    calls = []

    def poisoned(m, windows, first, out=None):
        z = real(m, windows, first, out=out)
        calls.append(1)
        if len(calls) == 4:
            z = np.array(z)
            z[0, 5, 7] = np.nan
        return z

    monkeypatch.setattr(cap, "window_logits", poisoned)
    d = tmp_path / "store"
    with pytest.raises(StoreError, match="reference logits are not finite"):
        cap.capture(R, ids, CTX, d, kinds=("compact",))
    st = Store(d)
    assert [st.done(i) for i in range(4)] == [True, True, True, False]
    assert len(calls) in (4, 5)  # the helper fails while window 4 (the fifth) may be decoding
    monkeypatch.setattr(cap, "window_logits", real)
    st = cap.capture(R, ids, CTX, d, kinds=("compact",))
    assert st.complete()


def test_opening_a_gguf_sets_torch_threads_from_a_helper_thread(smollm2_ref):
    """open_model on a GGUF imports torch in a helper thread (llama.cpp needs none to load or
    decode); once that thread is done, torch runs the metrics on the threads asked for."""
    code = ("import threading, sys\n"
            "from silentzone.backends import open_model\n"
            f"m = open_model({str(smollm2_ref.gguf)!r}, threads=1, n_ctx=64)\n"
            "for t in threading.enumerate():\n"
            "    if t.name == 'silentzone-import-torch': t.join()\n"
            "import torch\n"
            "print(torch.get_num_threads())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "1"
