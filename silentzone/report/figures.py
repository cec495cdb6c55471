"""The figures of one study, drawn from its saved analysis products only (silentzone.report.products).

    figures(R, figdir)   every figure as PDF + PNG with <name>.provenance.json (see `figures`)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

import analysis as A
from analysis.contracts import ContractError
from analysis.decompose import COMPOSITE

from .. import io
from ..tables import SAMPLES, read_table
from .numbers import pct, r2
from .products import FIGURE_METRICS, code_commit, code_versions, write_json

FIGURES = ("kld_vs_score", "sweep", "holdout", "decomposition", "per_prompt_kld", "routing")


def figures(results: str | Path, figdir: str | Path) -> dict[str, list[Path]]:
    """Draw every figure of the study from the saved products of `results` into `figdir`.

    Needs stats.json, cohort.csv, decomposition.csv (decomposition_products), sweep.csv, holdout.csv
    (sensitivity_products), routing.csv (per_prompt_products) and samples.csv. Writes <name>.pdf and
    <name>.png (analysis.plots.save, one style) for FIGURES, each with <name>.provenance.json:
      kld_vs_score    primary metric vs composite score, zone highlighted, full and zone rho
      sweep           zone rho vs threshold for FIGURE_METRICS of the primary corpus/ctx, bootstrap bands
      holdout         zone rho over held-out splits: zone from half A vs from half B itself
      decomposition   gains and losses per quant (composite), quants ordered by the primary metric
      per_prompt_kld  per-prompt KLD, passed vs failed prompts, of the cohort quant with the median
                      primary metric
      routing         routing accuracy on disagreement prompts per routed set, with chance
    Returns {figure name: [pdf, png]}.
    """
    from matplotlib.figure import Figure

    from analysis import plots

    r, figdir = Path(results), Path(figdir)
    need = ("stats.json", "cohort.csv", "decomposition.csv", "sweep.csv", "holdout.csv", "routing.csv",
            "samples.csv")
    for name in need:
        if not (r / name).is_file():
            raise ContractError(f"{r / name}: file not found (run the analysis products first)")
    stats = json.loads((r / "stats.json").read_text())
    cohort = pd.read_csv(r / "cohort.csv")
    metric, corpus, ctx = stats["metric"], stats["corpus"], int(stats["ctx"])
    prov_base = {"study": stats["study"], "label": stats["label"],
                 "config_hash": stats.get("provenance", {}).get("config_hash", ""),
                 "git_commit": code_commit(), "versions": code_versions()}
    title = stats.get("title") or f"{stats['study']}: {stats['label']}"
    out = {}

    def save(fig, name: str, inputs: tuple[str, ...]) -> None:
        out[name] = plots.save(fig, figdir / name)
        write_json({"figure": name, **prov_base, "inputs": {i: io.sha256_file(r / i) for i in inputs}},
                   figdir / f"{name}.provenance.json")

    with plots.style_context():
        fig = Figure(figsize=(5.2, 4.0))
        ax = fig.add_subplot()
        zone = cohort["in_zone"].astype(bool).to_numpy()
        floor = A.zone_floor(stats["ref_score"], stats["zone_rule"], stats["zone_threshold"]) \
            if stats.get("ref_score") is not None else None
        plots.scatter_zone(ax, cohort, metric, zone, floor, stats)
        ax.set_title(f"{title}\n{headline_title(stats)}", fontsize=6)
        save(fig, "kld_vs_score", ("stats.json", "cohort.csv"))

        sweep = pd.read_csv(r / "sweep.csv")
        sel = sweep[(sweep["corpus"] == corpus) & (sweep["ctx"] == ctx)
                    & sweep["metric"].isin([metric, *FIGURE_METRICS])]
        fig = Figure()
        plots.sweep_curves(fig.add_subplot(), sel, percent=stats["zone_rule"] == "relative", band=metric)
        distinct = sel[sel["metric"] == metric]["zone_id"].nunique() if "zone_id" in sel else len(sel)
        fig.axes[0].set_title(f"{title}: zone rho vs threshold ({corpus}, ctx {ctx})\n"
                              f"{distinct} distinct zones of {metric} over "
                              f"{sel['threshold'].nunique()} thresholds; band: its bootstrap 95% CI", fontsize=6)
        save(fig, "sweep", ("stats.json", "sweep.csv"))

        fig = Figure()
        plots.holdout_hist(fig.add_subplot(), pd.read_csv(r / "holdout.csv"), observed=stats.get("rho_zone"))
        fig.axes[0].set_title(f"{title}: held-out zone boundaries, {stats.get('n_splits_heldout')} splits; "
                              f"primary zone estimate (held-out median) {r2(stats.get('rho_zone_heldout'))}",
                              fontsize=6)
        save(fig, "holdout", ("stats.json", "holdout.csv"))

        dec = pd.read_csv(r / "decomposition.csv")
        order = list(cohort.sort_values([metric, "quant_id"], kind="stable")["quant_id"])
        fig = Figure(figsize=(max(4.5, 0.18 * len(order) + 1.5), 3.4))
        plots.decomposition_bars(fig.add_subplot(), dec, COMPOSITE, order,
                                 xlabel=f"quant, ordered by {metric} (low to high)")
        fig.axes[0].set_title(f"{title}: leapfrogs and drops vs reference; rho({metric}, volume) in the zone "
                              f"{r2(stats.get('rho_vol_zone'))}", fontsize=6)
        save(fig, "decomposition", ("stats.json", "cohort.csv", "decomposition.csv"))

        samples = read_table(r / "samples.csv", SAMPLES)
        fig = Figure()
        ax = fig.add_subplot()
        model = representative_quant(cohort, metric)
        inputs = ("stats.json", "cohort.csv", "samples.csv")
        if model is not None:
            note = ""
            if (r / "drop_prediction.csv").is_file():
                inputs += ("drop_prediction.csv",)
                dp = pd.read_csv(r / "drop_prediction.csv")
                row = dp[(dp["model"] == model) & (dp["task"] == "all")]
                if len(row):
                    row = row.iloc[0]
                    note = (f"drops {int(row['n_drops'])} of {int(row['n_drops'] + row['n_kept'])} "
                            f"reference-correct items, GM KLD ratio {_num(row['gm_ratio'], 2)} "
                            f"[{_num(row['ratio_lo'], 2)}, {_num(row['ratio_hi'], 2)}], AUROC "
                            f"{_num(row['auroc'], 2)} [{_num(row['auroc_lo'], 2)}, {_num(row['auroc_hi'], 2)}]")
            plots.per_prompt_hist(ax, samples, model, note=note)
            fig.suptitle(f"{title}: median-{metric} quant", fontsize=7)
        save(fig, "per_prompt_kld", inputs)

        route = pd.read_csv(r / "routing.csv")
        route = route[route["task"] == "all"].reset_index(drop=True)
        fig = Figure(figsize=(max(4.5, 0.45 * len(route) + 1.5), 4.2))
        ax = fig.add_subplot()
        if len(route):
            labels = [m.replace("+", " + ") if n == 2 else f"all {n}" for m, n in
                      zip(route["models"], route["n_models"])]
            plots.routing_bars(ax, route, labels)
        none = int((route["n_disagree"] == 0).sum()) if len(route) else 0
        ax.set_title(f"{title}: routing by lower per-prompt KLD ({len(route)} sets, median "
                     f"{_num(route['n_disagree'].median(), 0) if len(route) else 'n/a'} disagreements, "
                     f"{none} with none)", fontsize=6)
        fig.subplots_adjust(bottom=0.42)
        save(fig, "routing", ("stats.json", "routing.csv"))
    return out


def headline_title(stats: dict) -> str:
    """The main figure's title line, from stats.json: full and zone rho with their CIs (quant and item
    resampling), the hold-out estimate and the noise ceiling."""
    ci = stats.get("rho_full_ci") or [None, None]
    zci = stats.get("rho_zone_ci") or [None, None]
    line1 = (f"full rho {r2(stats['rho_full'])} [{r2(ci[0])}, {r2(ci[1])}]; zone rho "
             f"{r2(stats['rho_zone'])} (n={stats['n_zone']}; quants CI [{r2(zci[0])}, {r2(zci[1])}], "
             f"items CI [{r2(stats.get('rho_zone_items_lo'))}, {r2(stats.get('rho_zone_items_hi'))}])")
    line2 = (f"held-out zone rho {r2(stats.get('rho_zone_heldout'))}; a perfect metric would show "
             f"{r2(stats.get('ceiling_conservative_rho_median'))} to "
             f"{r2(stats.get('ceiling_optimistic_rho_median'))} (power "
             f"{pct(stats.get('ceiling_conservative_power'))} to {pct(stats.get('ceiling_optimistic_power'))}); "
             f"{stats['zone_definition']}")
    return f"{line1}\n{line2}"


def _num(v, digits: int) -> str:
    """A number as text with `digits` decimals; 'n/a' when undefined."""
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}"




def representative_quant(cohort: pd.DataFrame, metric: str) -> str | None:
    """The cohort quant at the (lower) median of `metric` (ties by quant_id); None if none has it."""
    c = cohort[np.isfinite(cohort[metric].to_numpy(float))].sort_values([metric, "quant_id"], kind="stable")
    return None if c.empty else str(c["quant_id"].iloc[(len(c) - 1) // 2])
