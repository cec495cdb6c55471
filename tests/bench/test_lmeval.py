"""lm-eval interop: --log_samples output imports into SAMPLES rows.

data/lmeval/samples_sciq_local_*.jsonl is the real output of lm-eval 0.4.13 (HF backend, CPU) on the
embedded SmolLM2 reference, for the first 20 SciQ items exported with `export_lm_eval_task`:
    python -c "from silentzone.bench.lmeval import export_lm_eval_task as e; e('sciq', 20, 'T')"
    lm_eval --model hf --model_args pretrained=<smollm2 hf-f32>,dtype=float32 --include_path T \
            --tasks sciq_local --device cpu --batch_size 1 --log_samples --output_path OUT
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from silentzone.bench.lmeval import LogSamplesError, export_lm_eval_task, import_log_samples

DATA = Path(__file__).parent / "data" / "lmeval"


def _real_file() -> Path:
    files = sorted(DATA.glob("samples_sciq_local_*.jsonl"))
    assert files, "the real lm-eval log is missing"
    return files[0]


def test_real_lm_eval_log_imports():
    f = import_log_samples(_real_file(), "smollm2", "reference-lmeval")
    assert len(f) == 20 and (f.task == "sciq_local").all() and f.item_id.iloc[0] == "sciq_local-0"
    assert f.margin.notna().all() and f.kld_mean.isna().all()
    raw = [json.loads(line) for line in _real_file().read_text().splitlines()]
    assert list(f.correct) == [r["acc"] == 1.0 for r in raw]
    assert (f.correct == (f.margin > 0)).all()


def test_lm_eval_margins_equal_native_scoring(hf_model, enc):
    """Same strings, same token ids: lm-eval's log-likelihoods equal ours on the HF backend."""
    from silentzone.bench import tasks
    from silentzone.bench.run import _score_likelihood, prepare
    f = import_log_samples(_real_file(), "smollm2", "reference-lmeval").set_index("item_id")
    t = tasks.get("sciq")
    for i, p in enumerate(prepare(t, t.items(4), enc)):
        r = _score_likelihood(t, hf_model, p)
        assert f.loc[f"sciq_local-{i}", "margin"] == pytest.approx(r["margin"], abs=2e-3)
        assert f.loc[f"sciq_local-{i}", "correct"] == r["correct"]


def test_documented_layouts_generation_filters_and_errors(tmp_path):
    # flattened v0.7 layout, numbers instead of strings, and a generate_until task with 2 filters
    mc = {"doc_id": 0, "doc": {"q": "x"}, "target": 1, "arguments": [["c", " a"], ["c", " b"]],
          "resps": [[-2.0, False], [-1.5, True]], "filtered_resps": [[-2.0, False], [-1.5, True]],
          "filter": "none", "metrics": ["acc", "acc_norm"], "acc": 1.0, "acc_norm": 0.0}
    p = tmp_path / "samples_toy_2026-11-22T07-00-00.000000.jsonl"
    p.write_text(json.dumps(mc) + "\n")
    f = import_log_samples(p, "s", "m")
    assert f.task.iloc[0] == "toy" and f.correct.iloc[0] and f.margin.iloc[0] == pytest.approx(0.5)
    gen = [{"doc_id": 3, "doc": {"question": "q"}, "target": "18", "arguments": [["Q", {"until": []}]],
            "resps": [["... so 18"]], "filtered_resps": [v], "filter": flt, "metrics": ["exact_match"],
            "exact_match": em} for flt, v, em in (("strict-match", "[invalid]", 0.0),
                                                  ("flexible-extract", "18", 1.0))]
    g = tmp_path / "samples_gsm8k_2026-11-22T07-00-00.000000.jsonl"
    g.write_text("".join(json.dumps(r) + "\n" for r in gen))
    assert not import_log_samples(g, "s", "m").correct.iloc[0]  # first filter by default
    assert import_log_samples(g, "s", "m", filter="flexible-extract").correct.iloc[0]
    assert math.isnan(import_log_samples(g, "s", "m").margin.iloc[0])
    bad = tmp_path / "samples_bad_x.jsonl"
    bad.write_text(json.dumps(mc) + "\n{not json\n")
    with pytest.raises(LogSamplesError, match=r"samples_bad_x.jsonl: line 2: invalid JSON"):
        import_log_samples(bad, "s", "m")


def test_export_writes_a_local_lm_eval_task(tmp_path):
    y = export_lm_eval_task("piqa", 3, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "piqa_local.jsonl").read_text().splitlines()]
    assert "task: piqa_local" in y.read_text() and len(rows) == 3
    assert rows[0]["context"].startswith("Goal: ") and rows[0]["choices"][0].startswith(" ")
