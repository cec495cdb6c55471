"""The analysis products and figures of one study, under their historical name.

The code lives in silentzone.report: products.py (the tables and stats.json: decomposition_products,
sensitivity_products, per_prompt_products, load, primary_variant, ...) and figures.py (figures).
This module re-exports both, so `from silentzone import analyze` keeps working in notebooks and tests.
"""

from __future__ import annotations

from .report.figures import FIGURES, figures, headline_title, representative_quant  # noqa: F401
from .report.products import *  # noqa: F401,F403
from .report.products import (  # noqa: F401 - the constants and helpers callers use by name
    ALPHA, CEILING_COUPLING, CEILING_COUPLINGS, CEILING_SIMS, CEILING_TRUTHS, EMBEDDED_NAMES, FAIL_COLUMNS,
    FIGURE_METRICS, FLOAT_FORMAT, INPUTS, PER_PROMPT_RESAMPLES, ROUTING_COLUMNS, ROUTING_MAX, TOST_MARGIN,
    decomposition_products, load, noise_ceiling_table, per_prompt_products, power_table, primary_variant,
    resolve, routing_models, sensitivity_products, shown, study_label, write_csv, write_json,
)
