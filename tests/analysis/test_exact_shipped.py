"""The headline numbers of the shipped studies, recomputed independently in exact arithmetic.

The expectation is built here from samples.csv / fidelity.csv / quants.csv with Python Fractions and
scipy.stats.spearmanr on the exact values (converted once), not through `analysis`; the analysis
functions must agree to 1e-9. STATS.md section 1 gives the SmolLM2 values: rho full -0.568 (p 0.0011),
zone -0.040 (p 0.86), n_zone 21.
"""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import cohort as C
from analysis import decompose as D
from analysis import zone as Z

DATA = Path(__file__).resolve().parents[2] / "data"
CORPUS, CTX, METRIC, THRESHOLD = "wiki", 512, "kld_mean", Fraction(2, 100)


def _tables(study):
    d = DATA / study
    if not (d / "samples.csv").exists():
        pytest.skip(f"no shipped tables for {study}")
    return tuple(pd.read_csv(d / f"{n}.csv", keep_default_na=False, na_values=[""])
                 for n in ("samples", "fidelity", "quants"))


def _independent(samples, fidelity, quants, pairing_p=None):
    """Exact composites (mean of task accuracies), zone and rhos, by hand; p from scipy's t
    approximation, or for a zone of at most 7 quants the exact pairing p (`pairing_p`, conftest)."""
    counts = {}
    for (model, task), g in samples.groupby(["model", "task"]):
        counts.setdefault(model, {})[task] = (int(g["correct"].astype(str).str.lower().eq("true").sum()), len(g))
    score = {m: sum(Fraction(k, n) for k, n in t.values()) / len(t) for m, t in counts.items()}
    ref = score["reference"]
    ok = quants[(quants["status"] == "ok") & (quants["quant_id"] != "reference")]["quant_id"].astype(str)
    ids = sorted(ok)
    fid = fidelity[(fidelity["corpus"] == CORPUS) & (fidelity["ctx"] == CTX) & (fidelity["metric"] == METRIC)]
    kld = fid.set_index("quant_id")["value"].astype(float).reindex(ids).to_numpy()
    s = [score[q] for q in ids]
    zone = np.array([(ref - v) / ref <= THRESHOLD for v in s])
    y = np.array([float(v) for v in s])
    # composite volume rate: mean over tasks of (gains + losses) / n, exactly
    wide = samples.pivot(index=["task", "item_id"], columns="model", values="correct").astype(str)
    wide = wide.apply(lambda c: c.str.lower() == "true")
    tasks = sorted(wide.index.get_level_values(0).unique())
    vol = []
    for q in ids:
        rates = [Fraction(int((wide.loc[t, q] != wide.loc[t, "reference"]).sum()), len(wide.loc[t])) for t in tasks]
        vol.append(float(sum(rates) / len(rates)))
    vol = np.array(vol)
    full = st.spearmanr(kld, y)
    inz = st.spearmanr(kld[zone], y[zone])
    p_zone = inz.pvalue if zone.sum() > 7 else pairing_p(kld[zone], y[zone])
    delta = np.array([float(v - ref) for v in s])
    return dict(n_zone=int(zone.sum()), rho_full=full.statistic, p_full=full.pvalue, rho_zone=inz.statistic,
                p_zone=p_zone, rho_vol_zone=st.spearmanr(kld[zone], vol[zone]).statistic,
                rho_delta_zone=st.spearmanr(kld[zone], delta[zone]).statistic, ids=ids, zone=zone, score=s)


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_headline_equals_independent_exact_recomputation(study):
    samples, fidelity, quants = _tables(study)
    want = _independent(samples, fidelity, quants)
    got = Z.headline_stats(samples, fidelity, quants, CORPUS, CTX, METRIC)
    assert got["n_zone"] == want["n_zone"]
    for k in ("rho_full", "p_full", "rho_zone", "p_zone", "rho_vol_zone", "rho_delta_zone"):
        assert abs(got[k] - want[k]) < 1e-9, k
    # delta = score - ref_score is a monotone shift of the score: identical ranks, identical rho
    assert got["rho_delta_zone"] == got["rho_zone"]
    c = C.cohort_table(samples, fidelity, quants, CORPUS, CTX)
    assert list(c["quant_id"]) == want["ids"]
    assert C.exact_values(c) == want["score"]
    assert list(C.zone_mask(c)) == list(want["zone"])
    dec = D.decomposition(samples).query("task == 'composite'").set_index("model").loc[want["ids"]]
    assert np.array_equal(dec["delta"].to_numpy(), [float(v - C.exact_values(c, "ref_score")[0])
                                                    for v in want["score"]])


def test_smollm2_headline_matches_stats_md():
    samples, fidelity, quants = _tables("smollm2")
    got = Z.headline_stats(samples, fidelity, quants, CORPUS, CTX, METRIC)
    # STATS.md / issue 18: -0.568 (p 0.0011) full; -0.040 (p 0.86) in the zone of 21 quants
    assert got["n_zone"] == 21
    assert round(got["rho_full"], 3) == -0.568 and round(got["p_full"], 4) == 0.0011
    assert round(got["rho_zone"], 3) == -0.040 and round(got["p_zone"], 2) == 0.86


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_shipped_stats_json_equals_independent_exact_recomputation(study):
    """Issue 18's bar: data/<study>/stats.json (what the README and the figures quote) equals the exact
    recomputation above from the shipped tables, to 1e-9."""
    import json
    samples, fidelity, quants = _tables(study)
    want = _independent(samples, fidelity, quants)
    shipped = json.loads((DATA / study / "stats.json").read_text())
    assert (shipped["corpus"], shipped["ctx"], shipped["metric"], shipped["zone_threshold"]) == \
        (CORPUS, CTX, METRIC, 0.02)
    assert shipped["n_zone"] == want["n_zone"]
    for k in ("rho_full", "p_full", "rho_zone", "p_zone", "rho_vol_zone", "rho_delta_zone"):
        assert abs(shipped[k] - want[k]) < 1e-9, k


@pytest.mark.parametrize("study", ["smollm2", "gemma3"])
def test_shipped_variants_table_repeats_the_primary_holdout(study):
    """robustness.csv's held-out columns (analysis.zone.holdout_variants, all variants on shared splits)
    must give the primary variant exactly the held-out estimate that stats.json reports from
    analysis.zone.holdout (one variant), since both draw the same splits from the same seed."""
    import json
    d = DATA / study
    rob = pd.read_csv(d / "robustness.csv")
    stats = json.loads((d / "stats.json").read_text())
    prov = stats["provenance"]
    row = rob[(rob["corpus"] == prov["corpus"]) & (rob["ctx"] == prov["ctx"]) & (rob["metric"] == stats["metric"])]
    assert len(row) == 1
    for col, key in (("rho_heldout", "rho_zone_heldout"), ("rho_heldout_lo", "rho_zone_heldout_lo"),
                     ("rho_heldout_hi", "rho_zone_heldout_hi")):
        assert row[col].iloc[0] == pytest.approx(stats[key], abs=1e-9), col  # csv keeps 10 digits
    # and every variant has a held-out value over the configured number of splits
    assert (rob["n_splits_valid"] <= prov["holdout_splits"]).all()
    assert rob["rho_heldout"].notna().mean() > 0.9


def _lease_tables(study: str):
    """The powered profile's tables read straight from the committed GPU leases' tars (not through
    `silentzone gather-leases`): each (model, task) bench table and each quant's fidelity table from
    the last lease holding it, for the quants of the shipped data/<study>-power/quants.csv; the
    reference's tables from the float run (`*-<study>-power-reference-f32.tar.xz`, read last)."""
    import io
    import re
    import tarfile
    quants = pd.read_csv(DATA / f"{study}-power" / "quants.csv", keep_default_na=False, na_values=[""])
    models = {"reference", *quants.loc[quants["status"] == "ok", "quant_id"].astype(str)}
    base = rf"^studies/{study}/power/"
    rx_s = re.compile(base + r"samples/(?P<m>[^/]+)/(?P<t>[^/]+)\.csv$")
    rx_f = re.compile(base + r"fidelity/(?P<q>[^/]+)/fidelity\.csv$")
    samples, fidelity = {}, {}
    gpu = DATA.parent / "docs" / "performance" / "gpu"
    (ref,) = gpu.glob(f"*-{study}-power-reference-f32.tar.xz")
    for path in sorted(gpu.glob(f"*-power-{study}-*results*.tar.xz")) + [ref]:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                s, f = rx_s.match(m.name), rx_f.match(m.name)
                if s and s["m"] in models:
                    samples[(s["m"], s["t"])] = tar.extractfile(m).read()
                elif f and f["q"] in models:
                    fidelity[f["q"]] = tar.extractfile(m).read()

    def frame(blobs):
        return pd.concat([pd.read_csv(io.BytesIO(b), keep_default_na=False, na_values=[""]) for b in blobs],
                         ignore_index=True)
    return frame(samples.values()), frame(fidelity.values()), quants


def test_shipped_power_stats_json_equals_independent_exact_recomputation(pairing_p):
    """Issue 19's bar: data/smollm2-power/stats.json equals the exact recomputation from the leases'
    own tables (3,170 items per model; the reference's from the float run), to 1e-9."""
    import json
    samples, fidelity, quants = _lease_tables("smollm2")
    assert samples.groupby("model").size().eq(3170).all()
    want = _independent(samples, fidelity, quants, pairing_p)
    assert len(want["ids"]) == 31  # the whole cohort: every quant of the profile but the failing one
    shipped = json.loads((DATA / "smollm2-power" / "stats.json").read_text())
    assert (shipped["corpus"], shipped["ctx"], shipped["metric"], shipped["zone_threshold"]) == \
        (CORPUS, CTX, METRIC, 0.02)
    assert shipped["n_quants"] == len(want["ids"]) and shipped["n_zone"] == want["n_zone"]
    for k in ("rho_full", "p_full", "rho_zone", "p_zone", "rho_vol_zone", "rho_delta_zone"):
        assert abs(shipped[k] - want[k]) < 1e-9, k


@pytest.mark.parametrize("study, twins", [("smollm2", [("Q2_K", "Q3_K_S"), ("Q4_K_M", "Q4_K_M-q8emb")]),
                                          ("gemma3", [("Q4_K_M", "Q4_K_M-q8emb")])])
def test_shipped_identical_quants_and_distinct_rhos(study, twins):
    """The shipped cohorts hold one model under two ids: Q4_K_M-q8emb's file is Q4_K_M's (the same
    sha256 in quants.csv: both models already keep their token embeddings at q8_0), and for SmolLM2
    Q2_K and Q3_K_S give the same tensor types, fidelity and answers. Found here by comparing the
    tables pairwise (not through `analysis`); stats.json's distinct rhos equal scipy on the cohort with
    each later twin dropped."""
    import json
    samples, fidelity, quants = _tables(study)
    want = _independent(samples, fidelity, quants)
    ids = want["ids"]
    man = quants.set_index("quant_id")
    found = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            same_file = man.loc[a, "sha256"] == man.loc[b, "sha256"]
            fa = fidelity[fidelity["quant_id"] == a].set_index(["corpus", "ctx", "metric"])["value"]
            fb = fidelity[fidelity["quant_id"] == b].set_index(["corpus", "ctx", "metric"])["value"]
            sa = samples[samples["model"] == a].set_index(["task", "item_id"])[["correct", "margin"]]
            sb = samples[samples["model"] == b].set_index(["task", "item_id"])[["correct", "margin"]]
            same_tables = fa.sort_index().equals(fb.sort_index()) and sa.sort_index().equals(sb.sort_index())
            if same_file or same_tables:
                found.append((a, b))
    assert found == twins
    s = json.loads((DATA / study / "stats.json").read_text())
    assert s["identical_quants"] == [" = ".join(t) for t in twins]
    keep = np.array([q not in {b for _, b in twins} for q in ids])
    fid = fidelity[(fidelity["corpus"] == CORPUS) & (fidelity["ctx"] == CTX) & (fidelity["metric"] == METRIC)]
    kld = fid.set_index("quant_id")["value"].astype(float).reindex(ids).to_numpy()
    y = np.array([float(v) for v in want["score"]])
    full = st.spearmanr(kld[keep], y[keep])
    zk = keep & want["zone"]
    assert s["n_distinct"] == int(keep.sum()) and s["n_zone_distinct"] == int(zk.sum())
    assert abs(s["rho_full_distinct"] - full.statistic) < 1e-9 and abs(s["p_full_distinct"] - full.pvalue) < 1e-9
    assert abs(s["rho_zone_distinct"] - st.spearmanr(kld[zk], y[zk]).statistic) < 1e-9
