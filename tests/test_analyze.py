"""silentzone.analyze: every product written from the contract tables, real values, byte-identical reruns,
one-line errors, and the notebooks 04-07 run by papermill. Torch-free, on the synthetic study of
tests/analysis/conftest.py (13 ok quants + 1 failed, tasks piqa and sciq x 150 items, 2 corpora x 2 ctx)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

import analysis as A
from analysis.contracts import STATS_KEYS, ContractError
from silentzone import analyze
from silentzone.config import load as load_config
from silentzone.paths import DATA, FIGURES, NOTEBOOKS, REPO
from silentzone.tables import FIDELITY, QUANTS, SAMPLES, read_table, write_table

_spec = importlib.util.spec_from_file_location("_analysis_conftest", REPO / "tests/analysis/conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
_make_study = _conftest._make_study

N_BOOT, N_SPLITS = 200, 20
SWEEP = [0.005, 0.01, 0.02, 0.05, 0.1]

COLUMNS = {
    "cohort.csv": "quant_id method bpw score deg_pts deg_rel ref_score score_num score_den ref_num kld_mean "
                  "kld_p99 top1_agreement in_zone vol_rate f se se_paired p_in_zone",
    "full_vs_zone.csv": "target scope metric definition threshold corpus ctx n rho p ci_lo ci_hi n_boot "
                        "p_perm fz_lo fz_hi",
    "decomposition.csv": " ".join(A.decompose.DECOMP_COLUMNS),
    "decomposition_correlations.csv": "task metric target scope " + " ".join(A.stats.CORR_COLUMNS),
    "sweep.csv": "corpus ctx metric definition threshold n_cohort n_members zone_id same_as_threshold "
                 + " ".join(A.stats.CORR_COLUMNS),
    "holdout.csv": "split n_heldout rho_heldout p_heldout n_insample rho_insample p_insample n_full rho_full "
                   "p_full",
    "holdout_summary.csv": "scope n_splits_valid rho_median rho_mean rho_lo rho_hi frac_significant n_median",
    "power.csv": "scope metric definition threshold n rho p alpha mdr power_at_margin power_at_full_rho "
                 "margin tost_p_lower tost_p_upper tost_p equivalent",
    "drop_prediction.csv": " ".join(A.per_prompt.DROP_COLUMNS),
    "noise_ceiling.csv": "truth coupling n_items n_sims rho_median rho_lo rho_hi n_valid power n_zone_median "
                         "slope study_items",
    "failure_prediction.csv": "model task n n_failed gm_failed gm_passed gm_ratio ratio_lo ratio_hi auroc "
                              "auroc_lo auroc_hi p_mw n_floored",
    "routing.csv": "pair n_models task n n_disagree route_acc ci_lo ci_hi chance p_chance routed_acc "
                   "random_acc best_single_acc best_single_model oracle_acc models",
}
COLUMNS = {name: cols.split() for name, cols in COLUMNS.items()}
ROBUSTNESS = ("corpus ctx metric n_full rho_full p_full ci_lo_full n_zone rho_zone p_holm_full p_holm_zone "
              "mdr_zone tost_p_zone equivalent_zone").split()


def write_study(r: Path, seed: int = 0, corpora=("wiki", "c4"), bootstrap_seed: int = 1, n_quants: int = 14,
                n_items: int = 150) -> Path:
    """Write the synthetic study's tables into r (fidelity as the pipeline writes it: extra columns, and
    q03 failed on the primary variant wiki/512, values NaN) and a config r/toy.yaml; return its path."""
    samples, fidelity, quants = _make_study(n_quants=n_quants, n_items=n_items, seed=seed)
    fidelity = fidelity.assign(store="compact", scoring="half", status="ok", reason="")
    bad = (fidelity["quant_id"] == "q03") & (fidelity["corpus"] == "wiki") & (fidelity["ctx"] == 512)
    fidelity.loc[bad, ["value", "status", "reason"]] = [math.nan, "failed", "non-finite logits"]
    r.mkdir(parents=True, exist_ok=True)
    for frame, schema, name in ((quants, QUANTS, "quants.csv"), (fidelity, FIDELITY, "fidelity.csv"),
                                (samples, SAMPLES, "samples.csv")):
        write_table(frame, schema, r / name, {"stage": "test"})
    cfg = {"study": "toy", "description": "synthetic",
           "reference": {"model": "embedded:smollm2-135m-instruct"},
           "seeds": {"global": 0, "bootstrap": bootstrap_seed, "holdout": 2}, "corpora": list(corpora),
           "contexts": [256, 512], "tasks": ["piqa", "sciq"],
           "zone": {"definition": "relative", "threshold": 0.02, "sweep": SWEEP,
                    "primary_metric": "kld_mean"},
           "quants": [{"id": q, "method": "gguf", "type": "Q4_0"} for q in sorted(quants["quant_id"])],
           "profiles": {"default": {"bootstrap": N_BOOT, "holdout_splits": N_SPLITS}}}
    (r / "toy.yaml").write_text(yaml.safe_dump(cfg))
    return r / "toy.yaml"


def run_all(r: Path, figdir: Path, config: Path) -> dict:
    cfg = load_config(config)
    out = {}
    for fn in (analyze.decomposition_products, analyze.sensitivity_products, analyze.per_prompt_products):
        out.update(fn(r, cfg))
    out.update(analyze.figures(r, figdir))
    return out


def digests(*dirs: Path) -> dict[str, str]:
    return {f"{d.name}/{p.relative_to(d)}": hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    base = tmp_path_factory.mktemp("analyze")
    r, figdir = base / "results", base / "figures"
    config = write_study(r)
    out = run_all(r, figdir, config)
    return r, figdir, load_config(config), out


def test_products_and_columns(products):
    r, figdir, _, out = products
    for name, cols in COLUMNS.items():
        frame = pd.read_csv(r / name)
        assert list(frame.columns) == cols, name
        assert len(frame) > 0, name
        prov = json.loads((r / f"{name}.provenance.json").read_text())
        assert prov["config_hash"] and prov["seeds"]["bootstrap"] == 1 and prov["git_commit"]
        assert set(prov["inputs"]) == {"quants.csv", "fidelity.csv", "samples.csv"}
        assert "created_utc" not in prov and "host" not in prov
    assert set(ROBUSTNESS) <= set(pd.read_csv(r / "robustness.csv").columns)
    for name in analyze.FIGURES:
        pdf, png = out[name]
        assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG"), name
        assert (figdir / f"{name}.provenance.json").is_file()


def test_load_drops_failed_fidelity_rows(products):
    r = products[0]
    samples, fidelity, quants = analyze.load(r)
    # 13 ok quants x 2 corpora x 2 ctx x 3 metrics = 156 rows, minus q03 on wiki/512 (3 rows, failed)
    assert len(fidelity) == 156 - 3 and (fidelity["status"] == "ok").all()
    assert len(quants) == 14 and samples["model"].nunique() == 14  # reference + 13 ok quants


def test_stats_json(products):
    r, _, cfg, _ = products
    stats = json.loads((r / "stats.json").read_text())
    assert set(STATS_KEYS) <= set(stats)
    assert "small-model replication" in stats["label"] and "not the paper" in stats["label"]
    # primary variant: the config's first corpus (wiki), largest ctx present (512)
    assert (stats["corpus"], stats["ctx"], stats["metric"]) == ("wiki", 512, "kld_mean")
    samples, fidelity, quants = analyze.load(r)
    cohort = A.cohort_table(samples, fidelity, quants, "wiki", 512)
    assert cohort["kld_mean"].isna().tolist() == [q == "q03" for q in cohort["quant_id"]]
    fin = cohort["kld_mean"].notna().to_numpy()
    zone = A.zone_mask(cohort, "relative", 0.02).to_numpy()
    # q03 is in the zone (by score) but has no primary metric: a member, not a pair of rho_zone
    assert zone[list(cohort["quant_id"]).index("q03")]
    assert stats["n_quants"] == 13 and stats["n_zone"] == int(zone.sum()) and 0 < stats["n_zone"] < 13
    assert stats["n_zone_rho"] == int((zone & fin).sum()) == stats["n_zone"] - 1 and stats["n_full_rho"] == 12
    rho, p = A.spearman(cohort["kld_mean"][fin], cohort["score"][fin])
    assert stats["rho_full"] == pytest.approx(rho, abs=1e-12)
    assert stats["p_full"] == pytest.approx(p, rel=1e-9)
    rho_zone, _ = A.spearman(cohort["kld_mean"][zone & fin], cohort["score"][zone & fin])
    assert stats["rho_zone"] == pytest.approx(rho_zone, abs=1e-12)
    assert stats["zone_definition"] == "relative composite degradation <= 2%"
    fz = pd.read_csv(r / "full_vs_zone.csv").set_index(["target", "scope"])
    for key, row in (("rho_full_ci", ("score", "full")), ("rho_zone_ci", ("score", "zone")),
                     ("rho_vol_zone_ci", ("vol_rate", "zone"))):
        lo, hi = stats[key]
        assert lo == pytest.approx(fz.loc[row, "ci_lo"], rel=1e-9) and lo <= hi
    assert fz.loc[("score", "zone"), "n"] == stats["n_zone_rho"]
    assert fz.loc[("score", "full"), "n_boot"] == N_BOOT
    assert fz.loc[("vol_rate", "zone"), "rho"] == pytest.approx(stats["rho_vol_zone"], abs=1e-9)
    assert stats["provenance"]["config_hash"] == cfg.config_hash
    cohort_csv = pd.read_csv(r / "cohort.csv")
    assert cohort_csv["in_zone"].tolist() == zone.tolist()


def test_decomposition_identity_on_written_table(products):
    r = products[0]
    written = pd.read_csv(r / "decomposition.csv")
    A.check_identity(written)  # exact: floats are written as round-trip text
    samples, _, _ = analyze.load(r)
    pd.testing.assert_frame_equal(written, A.decomposition(samples), check_exact=True, check_dtype=False)
    # 13 quants x (2 tasks + composite)
    assert len(written) == 13 * 3


def test_sensitivity_values(products):
    r, _, cfg, _ = products
    sweep = pd.read_csv(r / "sweep.csv")
    assert len(sweep) == 2 * 2 * 3 * len(SWEEP)  # corpora x ctx x metrics x thresholds
    primary = (sweep["corpus"] == "wiki") & (sweep["ctx"] == 512)
    assert (sweep.loc[primary, "n_boot"] > 0).all() and (sweep.loc[~primary, "n_boot"] == 0).all()
    # a larger threshold never shrinks the zone
    for _, g in sweep.groupby(["corpus", "ctx", "metric"]):
        assert g.sort_values("threshold")["n"].is_monotonic_increasing
    hold = pd.read_csv(r / "holdout.csv")
    assert hold["split"].tolist() == list(range(N_SPLITS))
    summary = pd.read_csv(r / "holdout_summary.csv")
    assert summary["scope"].tolist() == ["heldout", "insample", "full"]
    stats = json.loads((r / "stats.json").read_text())
    power = pd.read_csv(r / "power.csv").set_index("scope")
    assert power.loc["zone", "n"] == stats["n_zone_rho"]
    assert power.loc["full", "n"] == 12  # q03 lacks kld_mean
    assert power.loc["zone", "mdr"] == pytest.approx(stats["mdr_zone"], rel=1e-9)
    assert power.loc["zone", "mdr"] == pytest.approx(A.min_detectable_rho(stats["n_zone_rho"]), rel=1e-9)
    tost = A.tost_rho(stats["rho_zone"], stats["n_zone_rho"], analyze.TOST_MARGIN)
    assert power.loc["zone", "tost_p"] == pytest.approx(tost["p"], rel=1e-8)
    assert len(pd.read_csv(r / "robustness.csv")) == 2 * 2 * 3


def test_per_prompt_values(products):
    r = products[0]
    fail = pd.read_csv(r / "failure_prediction.csv")
    assert len(fail) == 13 * 3  # per quant: pooled ("all") + 2 tasks
    pooled = fail[fail["task"] == "all"].set_index("model")
    samples, _, _ = analyze.load(r)
    q = samples[samples["model"] == "q05"]
    assert pooled.loc["q05", "n"] == 300 and pooled.loc["q05", "n_failed"] == int((~q["correct"]).sum())
    route = pd.read_csv(r / "routing.csv")
    cohort = pd.read_csv(r / "cohort.csv")
    closest = cohort.sort_values("kld_mean")["quant_id"].head(analyze.ROUTING_MAX).tolist()
    assert "q03" not in closest  # no primary metric: never routed
    # every pair among the 6 closest quants (15) and the 6 together, one row per task + "all"
    assert route["pair"].nunique() == 16 and len(route) == 16 * 3
    assert route["models"].iloc[-1] == "+".join(closest)
    assert set(route.loc[route["n_models"] == 2, "models"].str.split("+").explode()) == set(closest)


def test_rerun_is_byte_identical_and_seed_matters(products, tmp_path):
    r, figdir, _, _ = products
    before = digests(r, figdir)
    run_all(r, figdir, r / "toy.yaml")
    assert digests(r, figdir) == before
    other = tmp_path / "results"
    config = write_study(other, bootstrap_seed=7)
    cfg = load_config(config)
    analyze.decomposition_products(other, cfg)
    a, b = pd.read_csv(r / "full_vs_zone.csv"), pd.read_csv(other / "full_vs_zone.csv")
    assert a["rho"].tolist() == b["rho"].tolist() and a["ci_lo"].tolist() != b["ci_lo"].tolist()


def test_primary_variant_rule(products):
    r, _, cfg, _ = products
    _, fidelity, _ = analyze.load(r)
    assert analyze.primary_variant(fidelity, cfg) == ("wiki", 512)
    reordered = replace(cfg, corpora=("c4", "wiki"))
    assert analyze.primary_variant(fidelity, reordered) == ("c4", 512)
    with pytest.raises(ValueError, match=r"fidelity.csv: no kld_mean values for any corpus"):
        analyze.primary_variant(fidelity[fidelity["metric"] != "kld_mean"], cfg)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_errors_name_the_file(tmp_path):
    r = tmp_path / "r"
    config = write_study(r)
    cfg = load_config(config)
    broken = tmp_path / "missing"
    shutil.copytree(r, broken)
    (broken / "samples.csv").unlink()
    with pytest.raises(ContractError) as err:
        analyze.decomposition_products(broken, cfg)
    assert _one_line(err) == f"{broken / 'samples.csv'}: file not found"

    other = tmp_path / "other"
    shutil.copytree(r, other)
    q = read_table(other / "quants.csv", QUANTS).assign(study="elsewhere")
    write_table(q, QUANTS, other / "quants.csv", {})
    with pytest.raises(ContractError) as err:
        analyze.load(other)
    assert "tables belong to different studies" in _one_line(err)
    assert "quants.csv 'elsewhere'" in str(err.value)

    cfg_other = replace(cfg, study="smollm2")
    with pytest.raises(ValueError) as err:
        analyze.sensitivity_products(r, cfg_other)
    assert "study 'toy'" in _one_line(err) and "'smollm2'" in str(err.value)

    stray = tmp_path / "stray"
    shutil.copytree(r, stray)
    s = read_table(stray / "samples.csv", SAMPLES)
    s.loc[s["model"] == "q00", "model"] = "zz"
    write_table(s, SAMPLES, stray / "samples.csv", {})
    with pytest.raises(ContractError) as err:
        analyze.load(stray)
    assert _one_line(err).startswith(f"{stray / 'samples.csv'}: quant(s) ['zz'] are not in quants.csv")

    with pytest.raises(ContractError) as err:
        analyze.figures(tmp_path / "r", tmp_path / "fig")  # products not made yet
    assert _one_line(err).endswith("file not found (run the analysis products first)")


def test_tiny_study_without_per_prompt_kld(tmp_path):
    """A smoke-sized study (4 ok quants, 20 items per task) whose benchmark gave no per-prompt KLD: every
    product and figure is still written; undefined numbers are empty cells / null, never a crash.
    Samples of a failed quant stay out of the products."""
    r, figdir = tmp_path / "r", tmp_path / "f"
    config = write_study(r, n_quants=5, n_items=20)
    s = read_table(r / "samples.csv", SAMPLES)
    s.loc[s["model"] != "reference", ["kld_mean", "kld_max"]] = math.nan
    failed = s[s["model"] == "q00"].assign(model="q04")  # q04 has status failed but was benchmarked
    write_table(pd.concat([s, failed], ignore_index=True), SAMPLES, r / "samples.csv", {})
    run_all(r, figdir, config)
    assert set(pd.read_csv(r / "decomposition.csv")["model"]) == {"q00", "q01", "q02", "q03"}
    stats = json.loads((r / "stats.json").read_text())
    assert stats["n_quants"] == 4 and stats["n_zone"] <= 3
    assert list(pd.read_csv(r / "failure_prediction.csv").columns) == COLUMNS["failure_prediction.csv"]
    assert pd.read_csv(r / "failure_prediction.csv").empty and pd.read_csv(r / "routing.csv").empty
    assert sorted(p.name for p in figdir.glob("*.pdf")) == sorted(f"{n}.pdf" for n in analyze.FIGURES)


def test_resolve_defaults(tmp_path, monkeypatch):
    """Empty results (a notebook run by hand): a scratch copy of data/<study> in the cache, figures
    beside it; given results: figures/<study> unless named."""
    monkeypatch.setenv("SILENTZONE_HOME", str(tmp_path))
    r, figdir, cfg = analyze.resolve("smollm2", "smoke")
    scratch = tmp_path / "scratch" / "smollm2-smoke"
    assert (r, figdir) == (scratch / "results", scratch / "figures")
    assert (r / "samples.csv").read_bytes() == (DATA / "smollm2" / "samples.csv").read_bytes()
    assert not (r / "notebooks").exists()
    assert analyze.resolve("smollm2", "smoke", DATA / "smollm2")[:2] == (DATA / "smollm2", FIGURES / "smollm2")
    assert cfg.study == "smollm2" and cfg.profile_name == "smoke"
    label, title = analyze.study_label(cfg)
    assert label == ("small-model replication (SmolLM2-135M-Instruct, embedded, smoke profile), "
                     "not the paper's models") and title == "smollm2: SmolLM2-135M-Instruct, small-model replication, smoke profile"
    label, _ = analyze.study_label(analyze.resolve("smollm2", "default", DATA / "smollm2")[2])
    assert label == "small-model replication (SmolLM2-135M-Instruct, embedded default), not the paper's models"
    # results gathered from GPU leases that have not finished the cohort say so
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "leases.json").write_text(
        '{"gathered": ["Q8_0", "Q4_0"], "n_quants_profile": 5, "left_out": {"Q2_K": "bench of 1 of 2 tasks"}}')
    _, title = analyze.study_label(cfg, tmp_path / "r")
    assert title == "smollm2: SmolLM2-135M-Instruct, small-model replication, smoke profile, interim: 2 of 5 quants"


def test_never_imports_torch():
    code = "import sys, silentzone.analyze; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


NOTEBOOKS_RUN = ("04_decomposition", "05_sensitivity", "06_per_prompt", "07_figures")


@pytest.mark.parametrize("name", NOTEBOOKS_RUN)
def test_notebook_is_thin_and_parameterized(name):
    import nbformat
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert book.metadata.kernelspec.name == "python3"
    params = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for line in ('study: str = "smollm2"', 'profile: str = "default"', 'results: str = ""',
                 'figures: str = ""', 'config: str = ""'):
        assert line in params[0].source
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code")


def test_notebooks_run_with_papermill(tmp_path, run_notebook):
    r, figdir = tmp_path / "results", tmp_path / "figures"
    config = write_study(r)
    for name in NOTEBOOKS_RUN:
        run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                     parameters=dict(study="toy", profile="default", results=str(r),
                                     figures=str(figdir), config=str(config)), cwd=str(REPO))
    assert (r / "stats.json").is_file() and (r / "routing.csv").is_file()
    assert sorted(p.name for p in figdir.glob("*.png")) == sorted(f"{n}.png" for n in analyze.FIGURES)
    executed = (tmp_path / "07_figures.ipynb").read_text()
    assert "image/png" in executed and "small-model replication" in executed
