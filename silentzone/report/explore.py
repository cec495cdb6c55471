"""What-if questions on the shipped results, in memory: another zone rule or threshold, another fidelity
variant (metric, corpus, context), one task instead of the composite. Nothing is written anywhere.

    from silentzone.report import explore
    tables = explore.tables("smollm2")                       # (samples, fidelity, quants) of data/smollm2
    res = explore.explore(*tables, corpus="wiki", ctx=512, definition="absolute", threshold=1.0, task="sciq")
    res.stats["rho_zone"], res.stats["rho_zone_heldout"], res.stats["ceiling_conservative_power"]
    explore.draw(fig, res)                                    # the KLD-vs-score figure of this choice

notebooks/00_explore.ipynb wires these two functions to widgets. The statistics are those of the
analysis products (`analysis`: exact scores and zone rules, quant- and item-resampling CIs, hold-out
zone, noise ceiling with the flips coupling), with fewer resamples so that a change redraws in about a
second; the shipped products (data/<study>/) remain the reference numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import analysis as A
from analysis import uncertainty as U
from analysis.decompose import COMPOSITE

from ..paths import DATA
from .numbers import ci, pct, pval, r2

DEFINITIONS = ("relative", "absolute", "kld_quantile", "bpw")
# thresholds a user starts from, per definition (units as analysis.cohort.zone_rule takes them)
DEFAULT_THRESHOLDS = {"relative": 0.02, "absolute": 1.0, "kld_quantile": 0.5, "bpw": 6.0}


@dataclass
class Result:
    """One exploration: the cohort table (in_zone, se_paired, p_in_zone added), the composite rows of
    the decomposition, and a flat dict of numbers (keys as in stats.json where they mean the same)."""

    cohort: pd.DataFrame
    decomposition: pd.DataFrame
    stats: dict = field(default_factory=dict)
    choice: dict = field(default_factory=dict)


def tables(study: str, data: Path = DATA) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The checked contract tables of data/<study>/ (samples, fidelity, quants), failed fidelity rows
    dropped and the samples restricted to the cohort (reference + quants with status ok)."""
    from .products import load
    samples, fidelity, quants = load(Path(data) / study)
    keep = {A.REFERENCE, *A.cohort.cohort_quants(quants)}
    return samples[samples["model"].isin(keep)].reset_index(drop=True), fidelity, quants


def options(samples: pd.DataFrame, fidelity: pd.DataFrame) -> dict:
    """What can be chosen: corpora, contexts, metrics (of the fidelity table) and tasks."""
    v = A.variants(fidelity)
    return {"corpus": sorted(v["corpus"].unique()), "ctx": sorted(int(c) for c in v["ctx"].unique()),
            "metric": sorted(v["metric"].unique()), "task": [COMPOSITE, *sorted(samples["task"].unique())],
            "definition": list(DEFINITIONS)}


def explore(samples: pd.DataFrame, fidelity: pd.DataFrame, quants: pd.DataFrame, corpus: str, ctx: int,
            metric: str = "kld_mean", definition: str = "relative", threshold: float = 0.02,
            task: str | None = None, seed: int = 1, n_resamples: int = 2000, holdout_splits: int = 100,
            ceiling_sims: int = 500) -> Result:
    """Full cohort vs zone for one choice, with its uncertainty and noise ceiling; writes nothing.

    task: None or "composite" for the composite of all tasks, else one task (its items only, for the
    reference and every quant). seed: every random step draws from generators seeded by (seed, step).
    Score-based hold-out and noise ceiling need a score-based zone (relative, absolute); other
    definitions leave those keys None.
    """
    if task not in (None, COMPOSITE):
        if task not in set(samples["task"]):
            raise ValueError(f"task {task!r} not in the samples (have {sorted(set(samples['task']))})")
        samples = samples[samples["task"] == task].reset_index(drop=True)
    rng = {k: np.random.default_rng([seed, i]) for i, k in enumerate(("quants", "items", "holdout", "ceiling"))}
    cohort = A.cohort_table(samples, fidelity, quants, corpus, int(ctx))
    if metric not in cohort:
        raise ValueError(f"metric {metric!r} has no values for corpus={corpus!r} ctx={ctx}")
    cohort["in_zone"] = A.zone_mask(cohort, definition, threshold, metric).to_numpy()
    se = U.score_se(samples).set_index("model")
    cohort["se_paired"] = se["se_paired"].reindex(cohort["quant_id"]).to_numpy(float)
    fz = A.full_vs_zone(cohort, metric, "score", definition, threshold, rng["quants"], n_resamples)
    fz = fz.set_index("scope")
    boot = U.item_bootstrap(samples, fidelity, quants, corpus, int(ctx), rng["items"], metric, definition,
                            threshold, n_resamples=n_resamples)
    cohort["p_in_zone"] = U.zone_probability(boot).set_index("quant_id")["p_in_zone"].reindex(
        cohort["quant_id"]).to_numpy(float)
    dec = A.decomposition(samples)
    dec = dec[(dec["task"] == COMPOSITE) & dec["model"].isin(cohort["quant_id"])].reset_index(drop=True)
    stats = {"n_quants": len(cohort), "n_zone": int(cohort["in_zone"].sum()),
             "zone_definition": A.describe_zone(definition, threshold, metric),
             "ref_score": float(cohort["ref_score"].iloc[0]) if len(cohort) else None}
    for scope in ("full", "zone"):
        r = fz.loc[scope]
        stats.update({f"rho_{scope}": _num(r["rho"]), f"p_{scope}": _num(r["p"]), f"n_{scope}_rho": int(r["n"]),
                      f"rho_{scope}_ci": [_num(r["ci_lo"]), _num(r["ci_hi"])]})
    stats.update({k: v for k, v in U.item_bootstrap_summary(boot).items() if k.endswith(("_lo", "_hi", "_median"))})
    scored = definition in ("relative", "absolute")
    if scored:
        hold = A.holdout(samples, fidelity, quants, corpus, int(ctx), rng["holdout"], metric, holdout_splits,
                         definition, threshold)
        stats.update(A.holdout_headline(A.holdout_summary(hold)))
        # the ceiling assumes a lower-is-better metric: a higher-is-better one in [0, 1] (top-1 agreement)
        # enters as 1 - value (its ranking reversed), so the ceiling's rho reads with the opposite sign
        fid = fidelity
        if A.cohort.oriented(metric) < 0:
            fid = fidelity.assign(value=np.where(fidelity["metric"] == metric, 1 - fidelity["value"],
                                                 fidelity["value"]))
        for truth in ("conservative", "optimistic"):
            c = U.noise_ceiling(samples, fid, quants, corpus, int(ctx), rng["ceiling"], metric, truth,
                                definition=definition, threshold=threshold, n_sims=ceiling_sims, coupling="flips")
            stats[f"ceiling_{truth}_rho_median"] = _num(c["rho_median"])
            stats[f"ceiling_{truth}_power"] = _num(c["power"])
    else:
        for k in ("rho_zone_heldout", "ceiling_conservative_rho_median", "ceiling_optimistic_rho_median",
                  "ceiling_conservative_power", "ceiling_optimistic_power"):
            stats[k] = None
    choice = dict(corpus=corpus, ctx=int(ctx), metric=metric, definition=definition, threshold=threshold,
                  task=task or COMPOSITE, seed=seed, n_resamples=n_resamples, holdout_splits=holdout_splits,
                  ceiling_sims=ceiling_sims)
    return Result(cohort, dec, stats, choice)


def summary(res: Result) -> str:
    """The numbers of one exploration as two lines of text (also the figure's title)."""
    s = res.stats
    line1 = (f"full rho {r2(s['rho_full'])} {ci(*s['rho_full_ci'])} ({pval(s['p_full'])}); zone rho "
             f"{r2(s['rho_zone'])} ({pval(s['p_zone'])}, n={s['n_zone']}): quants CI {ci(*s['rho_zone_ci'])}, "
             f"items CI {ci(s.get('rho_zone_items_lo'), s.get('rho_zone_items_hi'))}")
    line2 = (f"held-out zone rho {r2(s.get('rho_zone_heldout'))}; perfect metric here "
             f"{r2(s.get('ceiling_conservative_rho_median'))} / {r2(s.get('ceiling_optimistic_rho_median'))} "
             f"(power {pct(s.get('ceiling_conservative_power'))} / {pct(s.get('ceiling_optimistic_power'))}); "
             f"{s['zone_definition']}; task {res.choice['task']}")
    return f"{line1}\n{line2}"


def draw(fig, res: Result):
    """The KLD-vs-score figure of one exploration on `fig` (cleared first): quants with paired-SE error
    bars, the zone highlighted and, for score-based zones, its band; the numbers in the title. Returns
    the axes."""
    from analysis import plots
    fig.clear()
    ax = fig.add_subplot()
    c, ch = res.cohort, res.choice
    floor = A.zone_floor(res.stats["ref_score"], ch["definition"], ch["threshold"]) \
        if res.stats["ref_score"] is not None else None
    plots.scatter_zone(ax, c, ch["metric"], c["in_zone"].to_numpy(bool), floor,
                       logx=bool((c[ch["metric"]] > 0).all()))
    ax.set_title(summary(res), fontsize=6)
    return ax


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
