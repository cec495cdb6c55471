"""analysis.plots: each plot function draws on the given ax and returns it; style and save."""

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
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
    stats = Z.headline_stats(samples, fidelity, quants, "wiki", 256)
    floor = C.zone_floor(c["ref_score"].iloc[0])
    out = plots.scatter_zone(ax, c, zone=C.zone_mask(c), floor=floor, stats=stats)
    assert out is ax
    points = [a for a in ax.collections if isinstance(a, PathCollection)]
    assert sum(len(p.get_offsets()) for p in points) == len(c) and len(points) == 2
    assert len(ax.patches) == 1  # the shaded zone band
    assert any("zone: rho=" in t.get_text() for t in ax.texts)
    assert ax.get_xscale() == "log"
    empty = Figure().add_subplot()  # an empty zone: rho undefined is written as n/a
    plots.scatter_zone(empty, c, stats={**stats, "rho_zone": None, "p_zone": None, "n_zone": 0})
    assert any("zone: rho=n/a (p=n/a, n=0)" in t.get_text() for t in empty.texts)


def test_sweep_curves(study, ax):
    samples, fidelity, quants = study
    sw = Z.sweep(samples, fidelity, quants, [0.01, 0.02, 0.05, 0.1], metrics=["kld_mean", "kld_p99"],
                 rng=np.random.default_rng(0), n_resamples=100).query("corpus == 'wiki' and ctx == 256")
    assert plots.sweep_curves(ax, sw) is ax
    assert len([ln for ln in ax.lines if ln.get_marker() == "o"]) == 2
    assert sum(isinstance(a, PolyCollection) for a in ax.collections) == 2  # CI bands
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["kld_mean", "kld_p99"]


def test_holdout_hist(study, ax):
    samples, fidelity, quants = study
    table = Z.holdout(samples, fidelity, quants, "wiki", 256, np.random.default_rng(0), n_splits=20)
    assert plots.holdout_hist(ax, table) is ax
    assert sum(isinstance(c, BarContainer) for c in ax.containers) == 2
    assert len(ax.lines) == 2  # medians


def test_decomposition_bars(study, ax):
    samples, fidelity, quants = study
    dec = D.decomposition(samples)
    c = C.cohort_table(samples, fidelity, quants, "wiki", 256).sort_values("kld_mean")
    assert plots.decomposition_bars(ax, dec, order=c["quant_id"]) is ax
    assert len(ax.containers) == 2 and len(ax.containers[0]) == len(c)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(c["quant_id"])


def test_per_prompt_hist_and_routing(study):
    samples = study[0]
    fig = Figure()
    a1, a2 = fig.subplots(1, 2)
    assert plots.per_prompt_hist(a1, samples, "q05") is a1
    assert sum(isinstance(c, BarContainer) for c in a1.containers) == 2
    r = P.routing(samples, ["q02", "q09"], np.random.default_rng(0), 200)
    assert plots.routing_bars(a2, r) is a2
    assert len(a2.containers[0]) == len(r) and a2.get_ylim() == (0, 1)


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
