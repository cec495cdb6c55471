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
    per_prompt  per-prompt failure prediction (geometric-mean KLD ratio, AUROC; drops of the
                reference's correct answers) and KLD routing
    uncertainty item-level uncertainty: score SE and paired SE, item bootstrap of the zone rho and
                of zone membership, the noise ceiling of a perfect metric and items needed for power
    plots       figure functions (take `ax`, return it), `use_style`, `save`; the only module that
                imports matplotlib, and it is not imported here

Inputs are the contract frames of one study; every random step takes a `numpy.random.Generator`.
"""

from .cohort import (REFERENCE, composite_scores, cohort_table, describe_zone, exact_task_weights, exact_values,
                     fidelity_wide, identical_quants, task_scores, variants, zone_floor, zone_mask, zone_rule_int)
from .decompose import check_identity, decomposition, decomposition_correlations, mcnemar
from .per_prompt import auroc, drop_prediction, failure_prediction, poisson_binomial_pvalue, routing
from .stats import (DEFAULT_RESAMPLES, bootstrap_ci, correlate, exact_spearman_p, fisher_ci, holm, masked_spearman_rows,
                    min_detectable_rho, permutation_pvalue, power_rho, spearman, tost_rho, z_se)
from .uncertainty import (item_bootstrap, item_bootstrap_summary, items_for_power, noise_ceiling, score_se,
                          zone_probability)
from .zone import (distinct_zones, full_vs_zone, headline_stats, holdout, holdout_headline, holdout_splits,
                   holdout_summary, robustness_table, sweep)

__all__ = [
    "DEFAULT_RESAMPLES", "REFERENCE", "auroc", "bootstrap_ci", "check_identity", "cohort_table",
    "composite_scores", "correlate", "decomposition", "decomposition_correlations", "describe_zone",
    "distinct_zones", "drop_prediction", "exact_task_weights", "exact_values", "failure_prediction",
    "fidelity_wide", "fisher_ci", "full_vs_zone", "headline_stats", "identical_quants", "holdout", "holdout_headline",
    "holdout_splits", "holdout_summary", "holm", "item_bootstrap", "item_bootstrap_summary",
    "items_for_power", "exact_spearman_p", "masked_spearman_rows", "mcnemar", "min_detectable_rho", "noise_ceiling",
    "permutation_pvalue", "poisson_binomial_pvalue", "power_rho", "robustness_table", "routing",
    "score_se", "spearman", "sweep", "task_scores", "tost_rho", "variants", "z_se", "zone_floor",
    "zone_mask", "zone_probability", "zone_rule_int",
]
