"""Recipes, hashes and validation: pure and fast (no quantization runs here)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from silentzone.config import ConfigError, load
from silentzone.paths import CONFIGS
from silentzone.quantize import manifest as mf


def test_effective_recipe_fills_every_default(qstudy):
    p = qstudy.profile
    assert mf.effective_recipe("gptq", {"bits": 4}, p) == {
        "method": "gptq", "act_order": False, "bits": 4, "corpus": "wiki", "dampening": 0.01,
        "group_size": 64, "n_samples": p.calib_samples, "seq_len": 512, "symmetric": True}
    assert mf.effective_recipe("gguf", {"type": "Q8_0"}, p) == {"method": "gguf", "pure": False,
                                                                "type": "Q8_0"}
    assert mf.effective_recipe("bnb", {"type": "int8"}, p)["threshold"] == 6.0


def test_recipe_hash_tracks_what_shapes_the_artifact(qstudy, smollm2_ref):
    def h(method, params, profile=qstudy.profile):
        return mf.recipe_hash(mf.effective_recipe(method, params, profile), smollm2_ref, method)
    more = replace(qstudy.profile, calib_samples=64)
    assert h("gguf", {"type": "Q4_0"}) == h("gguf", {"type": "Q4_0"})
    assert h("gguf", {"type": "Q4_0"}) != h("gguf", {"type": "Q4_1"})
    # calibration size matters only to calibrated recipes
    assert h("gguf", {"type": "Q4_0"}) == h("gguf", {"type": "Q4_0"}, more)
    assert h("gguf", {"type": "Q4_0", "imatrix": "c4"}) != h("gguf", {"type": "Q4_0", "imatrix": "c4"}, more)
    assert h("gptq", {"bits": 4}) != h("gptq", {"bits": 4}, more)
    # an explicit default is the same recipe as an implicit one
    assert h("hqq", {"nbits": 4}) == h("hqq", {"nbits": 4, "group_size": 64, "axis": 1})


def test_requested_type_labels():
    assert mf.requested_type({"method": "gptq", "bits": 4, "group_size": 32, "act_order": True,
                              "symmetric": True}) == "w4g32-act"
    assert mf.requested_type({"method": "awq", "bits": 4, "group_size": 64, "symmetric": False}) == \
        "w4g64-asym"
    assert mf.requested_type({"method": "bnb", "type": "nf4", "double_quant": True}) == "nf4-dq"
    assert mf.requested_type({"method": "torchao", "type": "int4_weight_only", "group_size": 64}) == "int4g64"


@pytest.mark.parametrize("entry, needle", [
    ("{id: x, method: gguff, type: Q4_0}", "unknown quant method 'gguff'"),
    ("{id: x, method: gguf, type: Q9_0}", "quants[x].type: must be one of"),
    ("{id: x, method: bnb, type: nf3}", "quants[x].type: must be one of"),
    ("{id: x, method: gptq, bits: 4, groupsize: 64}", "quants[x].groupsize: unknown parameter"),
])
def test_unknown_method_or_type_fails_in_one_line_before_any_work(tmp_path, entry, needle):
    text = (CONFIGS / "smollm2.yaml").read_text()
    head, _, tail = text.partition("quants:\n")
    body = tail[tail.index("profiles:"):].replace("quants: [Q8_0, Q4_0, Q2_K, bnb-nf4]", "quants: [x]")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{head}quants:\n  - {entry}\n{body}")
    with pytest.raises(ConfigError) as e:
        load(bad, "smoke")
    assert needle in str(e.value) and "\n" not in str(e.value) and str(bad) in str(e.value)


def test_loadtime_rejects_bad_recipes_before_loading(smollm2_ref):
    from silentzone.quantize.loadtime import LoadtimeError, load as lt_load
    for method, recipe, needle in [("bnb", {"type": "nf3"}, "bnb.type: must be one of"),
                                   ("gptq", {"bits": 4}, "unknown load-time method 'gptq'"),
                                   ("hqq", {"nbits": 4, "groups": 64}, "unknown recipe key 'groups'"),
                                   ("quanto", {}, "missing recipe key 'weights'")]:
        with pytest.raises(LoadtimeError) as e:
            lt_load(method, recipe, "/nonexistent/dir", "cpu")   # fails before touching the path
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_both_embedded_cohorts_are_large_and_span_the_range():
    for study in ("smollm2", "gemma3"):
        st = load(CONFIGS / f"{study}.yaml", "default")
        assert len(st.quants) >= 28
        near = [q for q in st.quants if _nominal_bits(q) >= 5]
        assert len(near) >= 12, (study, [q.id for q in near])
        assert len(load(CONFIGS / f"{study}.yaml", "smoke").quants) <= 5


def _nominal_bits(q) -> float:
    p = dict(q.params)
    if q.method == "gguf":
        return {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5, "Q5_1": 5, "Q5_0": 5}.get(p["type"], 4)
    if q.method in ("gptq", "awq"):
        return p["bits"]
    if q.method == "bnb":
        return 8 if p["type"] == "int8" else 4
    if q.method == "torchao":
        return 8 if p["type"].startswith("int8") else 4
    if q.method == "quanto":
        return int(p["weights"][3:])
    return p["nbits"]


def test_cli_rejects_unknown_only_ids_in_one_line(capsys):
    from silentzone.cli import main
    assert main(["quantize", "--study", "smollm2", "--profile", "smoke", "--only", "Q8_0,Q9_9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Q9_9" in err and "\n" not in err
