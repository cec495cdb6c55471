"""analysis.plots: each plot function draws on the given ax and returns it; style and save."""

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import pandas as pd
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from analysis import cohort as C
from analysis import decompose as D
from analysis import per_prompt as P
from analysis import plots
from analysis import zone as Z


@pytest.fixture
def ax():
    return Figure().add_subplot()  # no pyplot: no global figure state


def test_scatter_zone(study, ax):
    samples, fidelity, quants = study
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256)
    c["se_paired"] = 0.01 * (1 + np.arange(len(c)) % 3)  # known bar half-heights
    ref = float(c["ref_score"].iloc[0])
    floor = C.zone_floor(ref)
    zone = C.zone_mask(c).to_numpy()
    out = plots.scatter_zone(ax, c, zone=zone, floor=floor)
    assert out is ax
    points = [a for a in ax.collections if isinstance(a, PathCollection)]
    drawn = np.vstack([p.get_offsets() for p in points])
    assert sorted(map(tuple, drawn)) == sorted(zip(c["kld_mean"], c["score"]))
    # error bars: one vertical segment per quant from score - se to score + se
    segs = [seg for coll in ax.collections if isinstance(coll, LineCollection) for seg in coll.get_segments()]
    spans = sorted((round(s[0][1], 12), round(s[1][1], 12)) for s in segs)
    want = sorted((round(y - e, 12), round(y + e, 12)) for y, e in zip(c["score"], c["se_paired"]))
    assert spans == want
    band = ax.patches[0].get_path().get_extents(ax.patches[0].get_patch_transform())
    y0, y1 = sorted(ax.transData.inverted().transform(ax.patches[0].get_transform().transform(
        ax.patches[0].get_path().vertices))[:, 1][[0, 1, 2, 3]])[0::3]
    assert band is not None and (y0, y1) == pytest.approx((floor, ref))  # the band is floor..reference
    assert len(ax.texts) == 0  # numbers go to the title: nothing drawn over the points
    assert ax.get_xscale() == "log"


def test_sweep_curves_draws_distinct_zones_oriented(study, ax):
    samples, fidelity, quants = study
    sw = Z.sweep(samples, fidelity, quants, [0.005, 0.01, 0.02, 0.05, 0.1],
                 metrics=["kld_mean", "top1_agreement"], rng=np.random.default_rng(0),
                 n_resamples=100).query("corpus == 'wiki' and ctx == 256")
    assert plots.sweep_curves(ax, sw, band="kld_mean") is ax
    lines = {ln.get_label(): ln for ln in ax.lines if ln.get_marker() == "o"}
    assert set(lines) == {"kld_mean", "top1_agreement (rho x -1)"}
    for metric, label, sign in (("kld_mean", "kld_mean", 1), ("top1_agreement", "top1_agreement (rho x -1)", -1)):
        g = sw[sw["metric"] == metric].sort_values("threshold")
        first = g.drop_duplicates("zone_id")  # thresholds selecting the same quants are drawn once
        assert list(lines[label].get_xdata()) == pytest.approx(list(100 * first["threshold"]))
        assert list(lines[label].get_ydata()) == pytest.approx(list(sign * first["rho"]), nan_ok=True)
    assert sum(isinstance(a, PolyCollection) for a in ax.collections) == 1  # one band, no overlap


def test_holdout_hist(study, ax):
    samples, fidelity, quants = study
    table = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(0), n_splits=20)
    assert plots.holdout_hist(ax, table, observed=-0.25) is ax
    assert sum(isinstance(c, BarContainer) for c in ax.containers) == 2
    xs = sorted(ln.get_xdata()[0] for ln in ax.lines)
    want = [np.nanmedian(table["rho_heldout"]), np.nanmedian(table["rho_insample"]), -0.25]
    assert xs == pytest.approx(sorted(want))  # both medians and the all-items rho


def test_decomposition_bars(study, ax):
    samples, fidelity, quants = study
    dec = D.decomposition(samples)
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256).sort_values("kld_mean")
    assert plots.decomposition_bars(ax, dec, order=c["quant_id"], xlabel="quant, by KLD") is ax
    comp = dec[dec["task"] == "composite"].set_index("model").loc[list(c["quant_id"])]
    ups = [r.get_height() for r in ax.containers[0]]
    downs = [r.get_height() for r in ax.containers[1]]
    assert ups == pytest.approx(list(comp["leapfrogs"] / comp["n"]))
    assert downs == pytest.approx(list(-comp["drops"] / comp["n"]))
    assert [t.get_text() for t in ax.get_xticklabels()] == list(c["quant_id"])
    assert ax.get_xlabel() == "quant, by KLD"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("leapfrogs") for t in legend) and any(t.startswith("drops") for t in legend)


def test_per_prompt_hist_and_routing(study):
    samples = study[0]
    fig = Figure()
    a1, a2 = fig.subplots(1, 2)
    assert plots.per_prompt_hist(a1, samples, "q05", note="GM ratio 1.10") is a1
    counts = [sum(r.get_height() for r in c) for c in a1.containers]
    g = samples[samples["model"] == "q05"]
    assert counts == [int(g["correct"].sum()), int((~g["correct"]).sum())]
    assert "GM ratio 1.10" in a1.get_title()
    r = P.routing(samples, ["q02", "q09"], np.random.default_rng(0), 200)
    r = pd.concat([r, r.iloc[[0]].assign(task="none", n_disagree=0, route_acc=np.nan)], ignore_index=True)
    assert plots.routing_bars(a2, r) is a2
    has = r["n_disagree"].to_numpy() > 0
    assert [b.get_height() for b in a2.containers[0]] == pytest.approx(list(r.loc[has, "route_acc"]))
    marks = [c for c in a2.collections if isinstance(c, PathCollection) and c.get_label() == "no disagreements"]
    assert len(marks) == 1 and list(marks[0].get_offsets()[:, 0]) == [len(r) - 1]  # not a 0% bar
    assert [t.get_text() for t in a2.texts] == [f"n={n}" for n in r["n_disagree"]]


def test_save_writes_pdf_and_png_reproducibly(tmp_path, ax):
    ax.plot([1, 2, 3], [3, 1, 2])
    paths = plots.save(ax.figure, tmp_path / "sub" / "fig1")
    assert [p.name for p in paths] == ["fig1.pdf", "fig1.png"]
    assert paths[0].read_bytes().startswith(b"%PDF") and paths[1].read_bytes().startswith(b"\x89PNG")
    first = [p.read_bytes() for p in paths]
    plots.save(ax.figure, tmp_path / "sub" / "fig1")
    assert [p.read_bytes() for p in paths] == first


def test_style_context_is_local():
    before = matplotlib.rcParams["pdf.fonttype"]
    with plots.style_context():
        assert matplotlib.rcParams["pdf.fonttype"] == 42
        colors = [c["color"].upper() for c in matplotlib.rcParams["axes.prop_cycle"]]
        assert colors[:3] == ["#0072B2", "#D55E00", "#009E73"]  # Okabe-Ito
    assert matplotlib.rcParams["pdf.fonttype"] == before


def test_use_style_sets_agg_and_truetype():
    code = ("import matplotlib; from analysis import plots; plots.use_style(); "
            "print(matplotlib.get_backend().lower(), matplotlib.rcParams['pdf.fonttype'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["agg", "42"]
