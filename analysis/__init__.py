"""Pure statistics of the silent-zone study (numpy, pandas, scipy, statsmodels; never torch).

Submodules, each with one purpose:
    contracts   the tidy tables passed between pipeline and analysis (QUANTS, FIDELITY, SAMPLES,
                stats.json keys) and `validate`
    stats       Spearman rho, percentile bootstrap, permutation p, Fisher-z CI, power, TOST, Holm
    cohort      composite scores, degradation, wide fidelity metrics, the cohort table, zone rules
    zone        full vs zone, threshold sweeps, robustness across variants, held-out zone boundaries,
                headline numbers for stats.json
    decompose   volume-direction decomposition (gains, losses, vol, f, delta; exact identity),
                McNemar per quant, correlations of fidelity metrics with vol, f and delta
    per_prompt  per-prompt failure prediction (geometric-mean KLD ratio, AUROC) and KLD routing
    plots       figure functions (take `ax`, return it), `use_style`, `save`; the only module that
                imports matplotlib, and it is not imported here

Inputs are the contract frames of one study; every random step takes a `numpy.random.Generator`.
"""

from .cohort import (REFERENCE, composite_scores, cohort_table, describe_zone, fidelity_wide, task_scores,
                     variants, zone_floor, zone_mask)
from .decompose import check_identity, decomposition, decomposition_correlations, mcnemar
from .per_prompt import auroc, failure_prediction, poisson_binomial_pvalue, routing
from .stats import (DEFAULT_RESAMPLES, bootstrap_ci, correlate, fisher_ci, holm, min_detectable_rho,
                    permutation_pvalue, power_rho, spearman, tost_rho)
from .zone import (full_vs_zone, headline_stats, holdout, holdout_splits, holdout_summary, robustness_table,
                   sweep)

__all__ = [
    "DEFAULT_RESAMPLES", "REFERENCE", "auroc", "bootstrap_ci", "check_identity", "cohort_table",
    "composite_scores", "correlate", "decomposition", "decomposition_correlations", "describe_zone",
    "failure_prediction", "fidelity_wide", "fisher_ci", "full_vs_zone", "headline_stats", "holdout",
    "holdout_splits", "holdout_summary", "holm", "mcnemar", "min_detectable_rho", "permutation_pvalue",
    "poisson_binomial_pvalue", "power_rho", "robustness_table", "routing", "spearman", "sweep",
    "task_scores", "tost_rho", "variants", "zone_floor", "zone_mask",
]
