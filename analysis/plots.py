"""Figures of the study. Each plot function draws saved results onto a given `ax` and returns it; none
computes statistics or touches global state. `use_style()` (scripts) or `style_context()` (anything
else) applies figures/style.mplstyle; `save(fig, stem)` writes stem.pdf and stem.png reproducibly.

The only module of `analysis` that imports matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd

from .cohort import oriented

STYLE = Path(__file__).resolve().parent.parent / "figures" / "style.mplstyle"
# Okabe-Ito colorblind-safe palette (the style file's cycle, by name for fixed roles)
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "green": "#009E73", "orange": "#E69F00",
             "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000"}
ZONE, OUTSIDE, REF = OKABE_ITO["vermillion"], OKABE_ITO["blue"], OKABE_ITO["black"]


def _style_path() -> str:
    """Path of figures/style.mplstyle; FileNotFoundError if the repository layout is missing."""
    if not STYLE.is_file():
        raise FileNotFoundError(f"{STYLE}: style file not found (run from the repository checkout)")
    return str(STYLE)


def use_style(backend: str | None = "agg") -> None:
    """Apply the study style globally (for figure scripts): select `backend` (None keeps the current
    one, e.g. inline in a notebook) and load figures/style.mplstyle."""
    if backend:
        matplotlib.use(backend)
    matplotlib.style.use(_style_path())


def style_context():
    """Context manager applying the study style only inside a `with` block."""
    return matplotlib.style.context(_style_path())


def save(fig, path_stem: str | Path) -> list[Path]:
    """Write `fig` to <path_stem>.pdf and <path_stem>.png (parents created). No timestamps are
    embedded, so the same figure gives the same bytes. Returns the two paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".pdf"), stem.with_name(stem.name + ".png")]
    fig.savefig(paths[0], metadata={"CreationDate": None, "ModDate": None})
    fig.savefig(paths[1], metadata={"Software": None})
    return paths


def _p(p: float) -> str:
    """p-value as text: 'p<0.001' or 'p=0.36'."""
    if p is None or not math.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _r(rho: float | None) -> str:
    """rho as signed text with two decimals, 'n/a' when undefined (None or NaN)."""
    return "n/a" if rho is None or not math.isfinite(rho) else f"{rho:+.2f}"


def scatter_zone(ax, cohort: pd.DataFrame, metric: str = "kld_mean", zone: Sequence[bool] | None = None,
                 floor: float | None = None, stats: dict | None = None, logx: bool = True,
                 label: bool = False, err: str | None = "se_paired"):
    """Fidelity metric (x) against composite score (y), one point per quant, zone points highlighted.

    cohort: `cohort_table` frame (quant_id, score, ref_score, `metric`). zone: bool per row (None: no
    zone). floor: lowest score of a score-based zone (`cohort.zone_floor`); the band from it up to the
    reference is shaded. err: column of one-SE error bars on the score (default the paired SE of
    score - reference over items; None or absent: no bars). stats: unused here (kept for callers; the
    numbers go into the title, where they cover no point). logx: log-scale x (KLD spans decades).
    label: write quant ids next to points. Returns ax.
    """
    x, y = cohort[metric].to_numpy(float), cohort["score"].to_numpy(float)
    e = cohort[err].to_numpy(float) if err and err in cohort else None
    z = np.zeros(len(x), bool) if zone is None else np.asarray(zone, bool)
    for sel, color, name in ((~z, OUTSIDE, "outside zone"), (z, ZONE, "silent zone")):
        if not sel.any():
            continue
        if e is not None:
            ax.errorbar(x[sel], y[sel], yerr=e[sel], fmt="none", ecolor=color, elinewidth=0.6, alpha=0.6,
                        zorder=2)
        ax.scatter(x[sel], y[sel], color=color, label=name, zorder=3, s=14)
    ref = float(cohort["ref_score"].iloc[0]) if len(cohort) else math.nan
    if math.isfinite(ref):
        ax.axhline(ref, color=REF, linestyle="--", linewidth=0.8, label="reference")
    if floor is not None and math.isfinite(floor) and math.isfinite(ref):
        ax.axhspan(floor, ref, color=ZONE, alpha=0.12, linewidth=0, label="zone band")
    if label:
        for q, xi, yi in zip(cohort["quant_id"], x, y):
            ax.annotate(str(q), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(metric.replace("_", " ") + (" (nats)" if metric.startswith(("kld", "js")) else ""))
    ax.set_ylabel("composite score" + (" (bars: paired SE)" if e is not None and err == "se_paired" else ""))
    ax.legend(loc="lower left", fontsize=6)
    return ax


def _variant_label(key: tuple, many_settings: bool) -> str:
    """Legend label of a (corpus, ctx, metric) variant."""
    corpus, ctx, metric = key
    return f"{metric} ({corpus}, {ctx})" if many_settings else str(metric)


def sweep_curves(ax, sweep_frame: pd.DataFrame, percent: bool = True, band: str | None = None):
    """Zone rho against the zone threshold, one line per variant, on distinct zones only.

    sweep_frame: `zone.sweep` output (corpus, ctx, metric, threshold, rho, ci_lo, ci_hi, n, and
    zone_id when present); filter it to the variants to show first. Thresholds that select the same
    quants as a smaller one (same zone_id) are not drawn again: each distinct zone is one point at its
    smallest threshold, annotated with its size n. Metrics that are higher-is-better (`oriented`) are
    drawn with rho sign-flipped, said in the legend. band: the metric whose bootstrap CI is shaded
    (one band, so that bands do not overlap; None: none). percent: thresholds as %. Returns ax.
    """
    many = sweep_frame[["corpus", "ctx"]].drop_duplicates().shape[0] > 1
    for key, g in sweep_frame.groupby(["corpus", "ctx", "metric"], sort=True):
        g = g.sort_values("threshold", kind="stable")
        if "zone_id" in g:
            g = g.drop_duplicates("zone_id", keep="first")
        sign = oriented(key[2])
        t = g["threshold"].to_numpy(float) * (100 if percent else 1)
        name = _variant_label(key, many) + (" (rho x -1)" if sign < 0 else "")
        line, = ax.plot(t, sign * g["rho"].to_numpy(float), marker="o", markersize=3, label=name)
        if key[2] == band:
            lo, hi = sign * g["ci_lo"].to_numpy(float), sign * g["ci_hi"].to_numpy(float)
            if np.isfinite(lo).any():
                ax.fill_between(t, np.minimum(lo, hi), np.maximum(lo, hi), color=line.get_color(), alpha=0.15,
                                linewidth=0)
            for ti, ri, ni in zip(t, sign * g["rho"].to_numpy(float), g["n"]):
                ax.annotate(f"n={int(ni)}", (ti, ri), fontsize=5, xytext=(0, 5), textcoords="offset points",
                            ha="center")
    ax.axhline(0, color=REF, linewidth=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("zone threshold" + (" (%)" if percent else "") + ", distinct zones only")
    ax.set_ylabel("Spearman rho in zone")
    ax.legend(loc="lower left", fontsize=6)
    return ax


def holdout_hist(ax, holdout_frame: pd.DataFrame, scopes: Sequence[str] = ("heldout", "insample"),
                 bins: int = 30, observed: float | None = None):
    """Distribution over splits of the zone rho (`zone.holdout` output), one histogram per scope
    ('heldout': zone from half A, scores from B; 'insample': both from B; 'full'), medians as lines
    (the held-out median is the primary zone estimate). observed: the in-sample zone rho on all items
    (stats.json rho_zone), drawn dashed. Returns ax."""
    edges = np.linspace(-1, 1, bins + 1)
    names = {"heldout": "zone from held-out half", "insample": "zone from same half", "full": "full cohort"}
    for scope, color in zip(scopes, (ZONE, OUTSIDE, OKABE_ITO["green"])):
        rho = holdout_frame[f"rho_{scope}"].to_numpy(float)
        rho = rho[np.isfinite(rho)]
        ax.hist(rho, bins=edges, color=color, alpha=0.5, label=names.get(scope, scope))
        if rho.size:
            med = float(np.median(rho))
            ax.axvline(med, color=color, linewidth=1.2, label=f"median {med:+.2f}")
    if observed is not None and math.isfinite(observed):
        ax.axvline(observed, color=REF, linestyle="--", linewidth=1,
                   label=f"all items, in sample {observed:+.2f}")
    ax.set_xlabel("Spearman rho(KLD, score) on half B")
    ax.set_ylabel("splits")
    ax.legend(loc="upper left", fontsize=6)
    return ax


def decomposition_bars(ax, decomposition: pd.DataFrame, task: str = "composite",
                       order: Sequence[str] | None = None, xlabel: str = "quant"):
    """Leapfrogs (up) and drops (down) per quant as fractions of items, with the score
    change delta. xlabel: the x-axis label (say how the quants are ordered).

    decomposition: `decompose.decomposition` output; task: which task's rows (default the pooled rows;
    their bars are pooled counts / n while delta is the weighted composite change). order: quant ids
    left to right (e.g. sorted by KLD); default the table order. Returns ax.
    """
    d = decomposition[decomposition["task"] == task].set_index("model")
    if order is not None:
        d = d.loc[list(order)]
    pos = np.arange(len(d))
    n = d["n"].to_numpy(float)
    ax.bar(pos, d["leapfrogs"] / n, color=OKABE_ITO["green"], label="leapfrogs (quant right, ref wrong)")
    ax.bar(pos, -d["drops"] / n, color=OKABE_ITO["vermillion"], label="drops (ref right, quant wrong)")
    ax.scatter(pos, d["delta"], color=REF, marker="D", s=12, zorder=3, label="score change")
    ax.axhline(0, color=REF, linewidth=0.6)
    ax.set_xticks(pos, [str(m) for m in d.index], rotation=90, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of items")
    ax.legend(loc="lower left", fontsize=6)
    return ax


def per_prompt_hist(ax, samples: pd.DataFrame, model: str, metric: str = "kld_mean", floor: float = 1e-10,
                    bins: int = 40, note: str = ""):
    """Histograms of log10 per-prompt KLD of one model, passed vs failed prompts.

    samples: SAMPLES rows; model: a quant id; metric: per-prompt column (nats), values below
    `floor` drawn at floor. note: text for the title (e.g. the GM ratio and AUROC). Returns ax.
    """
    g = samples[(samples["model"] == model) & np.isfinite(samples[metric].to_numpy(float))]
    logk = np.log10(np.maximum(g[metric].to_numpy(float), floor))
    ok = g["correct"].to_numpy(bool)
    edges = np.linspace(logk.min(), logk.max() + 1e-9, bins + 1) if len(logk) else bins
    ax.hist(logk[ok], bins=edges, color=OUTSIDE, alpha=0.55, label=f"passed (n={int(ok.sum())})")
    ax.hist(logk[~ok], bins=edges, color=ZONE, alpha=0.55, label=f"failed (n={int((~ok).sum())})")
    ax.set_xlabel(f"log10 per-prompt {metric.replace('_', ' ')} (nats)")
    ax.set_ylabel("prompts")
    ax.set_title(f"{model}{': ' + note if note else ''}", fontsize=7)
    ax.legend(loc="best", fontsize=6)
    return ax


def routing_bars(ax, routing_frame: pd.DataFrame, labels: Sequence[str] | None = None):
    """Routing accuracy on disagreement prompts per row (`per_prompt.routing` output), with bootstrap
    CI, the chance level as a black tick, and n (disagreement prompts) above each bar. A row without
    disagreements has no accuracy: it gets a grey 'none' marker, never a 0% bar. labels: x tick labels
    (default the task column), drawn rotated. Returns ax."""
    pos = np.arange(len(routing_frame))
    acc = routing_frame["route_acc"].to_numpy(float)
    nd = routing_frame["n_disagree"].to_numpy(int)
    has = (nd > 0) & np.isfinite(acc)
    err = np.abs(np.vstack([acc - routing_frame["ci_lo"].to_numpy(float),
                            routing_frame["ci_hi"].to_numpy(float) - acc]))
    ax.bar(pos[has], acc[has], color=OUTSIDE, label="route by lower KLD")
    if np.isfinite(err[:, has]).any():
        ax.errorbar(pos[has], acc[has], yerr=np.nan_to_num(err[:, has]), fmt="none", ecolor=REF, capsize=2)
    ax.scatter(pos[has], routing_frame["chance"].to_numpy(float)[has], marker="_", s=200, color=REF, zorder=3,
               label="chance")
    if (~has).any():
        ax.scatter(pos[~has], np.full((~has).sum(), 0.5), marker="x", color="0.5", zorder=3,
                   label="no disagreements")
    for x, n in zip(pos, nd):
        ax.annotate(f"n={n}", (x, 1.0), fontsize=5, ha="center", va="bottom", xytext=(0, 1),
                    textcoords="offset points")
    ax.set_xticks(pos, [str(t) for t in (labels if labels is not None else routing_frame["task"])],
                  rotation=90, fontsize=5)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy on disagreement prompts")
    ax.legend(loc="lower right", fontsize=6)
    return ax
