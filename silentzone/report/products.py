"""Analysis products of one study: the tables and stats.json that the paper's claims rest on.

A results directory R (e.g. data/smollm2/) holds the three contract tables the pipeline writes,
R/quants.csv, R/fidelity.csv and R/samples.csv. Four functions read them and write products beside
them, each with <file>.provenance.json (config hash, seeds, package versions, git commit, sha256 of
the inputs; no timestamps or hostnames, so a rerun with the same inputs and seeds is byte-identical):

    decomposition_products(R, cfg)  full_vs_zone.csv, decomposition.csv, decomposition_correlations.csv,
                                    cohort.csv, stats.json
    sensitivity_products(R, cfg)    sweep.csv, holdout.csv, holdout_summary.csv, robustness.csv, power.csv
    per_prompt_products(R, cfg)     failure_prediction.csv, routing.csv
(The figures drawn from these products are in silentzone.report.figures.)

Choices (each recorded in the products):
  - primary variant: the config's first corpus present in fidelity.csv, at the largest context length
    present for that corpus; primary metric zone.primary_metric (stats.json keys corpus, ctx, metric);
  - composite score: mean of task accuracies (equal task weights, `analysis.cohort.task_weights`);
  - randomness: every product draws from its own generator, seeded by (seed, crc32(product name)),
    seed = seeds.bootstrap (seeds.holdout for the held-out splits), so products do not depend on the
    order they are made in; bootstrap resamples = profile.bootstrap, splits = profile.holdout_splits;
  - percentile-bootstrap CIs and permutation p-values are computed where a number is quoted (full vs
    zone, stats.json, the decomposition correlations of the primary metric, the sweep of the primary
    corpus/ctx for FIGURE_METRICS, failure prediction, routing). The full grids (sweep and robustness
    over every corpus x ctx x metric, decomposition correlations of the other metrics) carry the
    Fisher-z interval only (n_boot == 0 marks them): ~30 metrics x 12 settings x 9 thresholds at
    10,000 resamples would take minutes. `bootstrap_all=True` resamples everything. Failure
    prediction resamples every prompt, so its CIs use min(profile.bootstrap, PER_PROMPT_RESAMPLES);
  - products cover the cohort: quants with status ok (samples of failed quants are left out).

Errors on bad input are one line naming the file (ContractError or ValueError).
Never imports torch or the pipeline stages: only analysis, pandas, numpy and the light silentzone modules.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

import analysis as A
from analysis import uncertainty as U
from analysis.cohort import cohort_quants, item_matrix, metric_columns
from analysis.contracts import ContractError
from analysis.decompose import COMPOSITE

from .. import io, paths
from ..config import Study, load_study
from ..provenance import PACKAGES, git_commit, versions
from ..tables import FIDELITY, FLOAT_FORMAT, QUANTS, SAMPLES, read_table, write_csv, write_stats  # noqa: F401 (re-exported)

INPUTS = {"quants.csv": QUANTS, "fidelity.csv": FIDELITY, "samples.csv": SAMPLES}
TOST_MARGIN = 0.5  # equivalence margin for |rho| in the zone: "no more than a moderate correlation"
ALPHA = 0.05
ROUTING_MAX = 6  # routing: every pair among the ROUTING_MAX cohort quants with the lowest primary metric
# Failure prediction resamples every prompt of every quant: at 10,000 resamples, 38 quants x 1,200 prompts
# take ~50 s on 2 cores (measured), so its CIs use at most this many (plenty for 95% percentile bounds).
PER_PROMPT_RESAMPLES = 2000
FIGURE_METRICS = ("kld_mean", "kld_p99", "js_mean", "top1_agreement", "ppl_ratio")  # sweep CIs, sweep figure
_RHO_MAX = 1 - 1e-12  # power_table clips |rho| = 1 (power 1) below atanh's pole
FAIL_COLUMNS = ("model", "task", "n", "n_failed", "gm_failed", "gm_passed", "gm_ratio", "ratio_lo",
                "ratio_hi", "auroc", "auroc_lo", "auroc_hi", "p_mw", "n_floored")
ROUTING_COLUMNS = ("pair", "n_models", "task", "n", "n_disagree", "route_acc", "ci_lo", "ci_hi", "chance",
                   "p_chance", "routed_acc", "random_acc", "best_single_acc", "best_single_model",
                   "oracle_acc", "models")
# Noise ceiling (issue 18, ../STATS.md section 3): what a metric ranking true quality perfectly would show
# in the zone at the study's item counts, under two truth models and three couplings of the quants'
# answers to the reference's; CEILING_COUPLING is the one the headline quotes (the realistic one: the
# reference's answers drawn once per simulation, each quant flipping them at its observed churn).
CEILING_TRUTHS = ("conservative", "optimistic")
CEILING_COUPLINGS = ("flips", "independent", "shared")
CEILING_COUPLING = "flips"
CEILING_SIMS = 2000
EMBEDDED_NAMES = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma 3 270M"}


# ---------------------------------------------------------------------------------------------- input

def load(results: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read and check the three contract tables of a results directory: (samples, fidelity, quants).

    Fidelity rows with status 'failed' are dropped (their values are NaN). Refuses, with one line
    naming the file: a missing or invalid table, a table with several studies, tables of different
    studies, samples or fidelity rows of a quant not in quants.csv, an ok quant without samples, and
    samples whose items do not join across models (`analysis.cohort.item_matrix`).
    """
    r = Path(results)
    samples, fidelity, quants = (read_table(r / name, INPUTS[name]) for name in
                                 ("samples.csv", "fidelity.csv", "quants.csv"))
    if "status" in fidelity:
        fidelity = fidelity[fidelity["status"].astype(str) != "failed"].reset_index(drop=True)
    studies = {}
    for name, frame in (("quants.csv", quants), ("fidelity.csv", fidelity), ("samples.csv", samples)):
        found = sorted(frame["study"].astype(str).unique())
        if len(found) > 1:
            raise ContractError(f"{r / name}: mixes studies {found}; one study per results directory")
        studies[name] = found[0] if found else None
    if len({s for s in studies.values() if s is not None}) > 1:
        raise ContractError(f"{r}: tables belong to different studies: "
                            + ", ".join(f"{k} {v!r}" for k, v in studies.items()))
    if quants.empty:
        raise ContractError(f"{r / 'quants.csv'}: no quants")
    known = set(quants["quant_id"].astype(str))
    for name, col, frame in (("samples.csv", "model", samples), ("fidelity.csv", "quant_id", fidelity)):
        stray = sorted(set(frame[col].astype(str)) - known - {A.REFERENCE})
        if stray:
            raise ContractError(f"{r / name}: quant(s) {stray[:5]} are not in quants.csv")
    lacking = sorted(set(cohort_quants(quants)) - set(samples["model"].astype(str)))
    if lacking:
        raise ContractError(f"{r / 'samples.csv'}: quant(s) {lacking[:5]} have status ok in quants.csv "
                            "but no samples")
    if fidelity.empty:
        raise ContractError(f"{r / 'fidelity.csv'}: no fidelity rows with status ok")
    try:
        item_matrix(samples)
    except ValueError as e:
        raise ContractError(f"{r / 'samples.csv'}: {e}") from None
    return samples, fidelity, quants


def primary_variant(fidelity: pd.DataFrame, cfg: Study,
                    where: str | Path = "fidelity.csv") -> tuple[str, int]:
    """The (corpus, ctx) that headline numbers use: the config's first corpus present in `fidelity`
    with the primary metric, at the largest context length present for that corpus.
    ValueError (naming `where`) when no config corpus has the primary metric."""
    metric = cfg.zone.primary_metric
    have = fidelity[(fidelity["metric"] == metric) & np.isfinite(fidelity["value"].to_numpy(float))]
    for corpus in cfg.corpora:
        ctxs = have.loc[have["corpus"] == corpus, "ctx"]
        if len(ctxs):
            return str(corpus), int(ctxs.max())
    raise ValueError(f"{where}: no {metric} values for any corpus of the config {list(cfg.corpora)}")


def _check_study(samples: pd.DataFrame, cfg: Study, results: Path) -> None:
    """ValueError when the tables' study is not the config's."""
    found = str(samples["study"].iloc[0]) if len(samples) else cfg.study
    if found != cfg.study:
        raise ValueError(f"{results}: tables are of study {found!r} but the config {cfg.source or ''} "
                         f"is study {cfg.study!r}")


class _Run:
    """What every product of one call shares: the tables, config, primary variant and provenance."""

    def __init__(self, results: str | Path, cfg: Study):
        self.r = Path(results)
        self.cfg = cfg
        samples, self.fidelity, self.quants = load(self.r)
        _check_study(samples, cfg, self.r)
        # products cover the cohort (status ok): samples of failed quants stay out of every table
        self.samples = samples[samples["model"].isin({A.REFERENCE, *cohort_quants(self.quants)})]
        self.corpus, self.ctx = primary_variant(self.fidelity, cfg, self.r / "fidelity.csv")
        self.metric, self.definition = cfg.zone.primary_metric, cfg.zone.definition
        self.threshold = float(cfg.zone.threshold)
        self.n_resamples = int(cfg.profile.bootstrap)
        self.inputs = {name: io.sha256_file(self.r / name) for name in INPUTS}

    def rng(self, product: str, seed: int | None = None) -> np.random.Generator:
        """The generator of one product (see module doc)."""
        return _rng(self.cfg.seeds.bootstrap if seed is None else seed, product)

    def cohort(self) -> pd.DataFrame:
        """`analysis.cohort_table` of the primary corpus/ctx."""
        return A.cohort_table(self.samples, self.fidelity, self.quants, self.corpus, self.ctx)

    def holdout(self) -> pd.DataFrame:
        """`analysis.holdout` of the primary variant (profile.holdout_splits splits, seeds.holdout):
        the same table wherever it is made (its generator is seeded by the product name)."""
        return A.holdout(self.samples, self.fidelity, self.quants, self.corpus, self.ctx,
                         self.rng("holdout", self.cfg.seeds.holdout), self.metric,
                         int(self.cfg.profile.holdout_splits), self.definition, self.threshold)

    def provenance(self, product: str, **params) -> dict:
        """Provenance of one product: no timestamps or hosts (reruns stay byte-identical)."""
        cfg = self.cfg
        return {"product": product, "study": cfg.study, "profile": cfg.profile_name,
                "config_hash": cfg.config_hash, "config": Path(cfg.source).name,
                "seeds": {"global": cfg.seeds.global_, "bootstrap": cfg.seeds.bootstrap,
                          "holdout": cfg.seeds.holdout},
                "n_resamples": self.n_resamples, "holdout_splits": int(cfg.profile.holdout_splits),
                "corpus": self.corpus, "ctx": self.ctx, "metric": self.metric,
                "zone": {"definition": self.definition, "threshold": self.threshold,
                         "sweep": list(cfg.zone.sweep)},
                "git_commit": code_commit(), "versions": code_versions(), "inputs": self.inputs, **params}

    def write(self, frame: pd.DataFrame, name: str, exact: bool = False, **params) -> Path:
        """Write R/<name> and its provenance; see `write_csv`."""
        return write_csv(frame, self.r / name, self.provenance(name, **params), exact)


def shown(path: str | Path) -> str:
    """A path as the notebooks print it: relative to the repository when inside it, so that executed
    notebooks do not carry the absolute paths of the machine that ran them."""
    path = Path(path).resolve()
    return str(path.relative_to(paths.REPO)) if path.is_relative_to(paths.REPO) else str(path)


def resolve(study: str, profile: str = "default", results: str | Path = "", figdir: str | Path = "",
            config: str | Path = "") -> tuple[Path, Path, Study]:
    """The notebooks' parameters as (results directory, figure directory, loaded config).

    An empty `results` (a notebook opened and run by hand) is a scratch copy of the shipped
    data/<study>/ (paths.scratch_dir: results/ and figures/ in the cache), so that exploring never
    rewrites the shipped results; the workflow and `make analysis` name their directories. An empty
    `figdir` is figures/<study> beside given results and the scratch figures beside scratch ones; an
    empty `config` is configs/<study>.yaml."""
    cfg = load_study(config or study, profile)
    if results:
        return Path(results), Path(figdir) if figdir else paths.figures_dir(study), cfg
    scratch = paths.scratch_dir(study, profile)
    return (scratch_copy(paths.data_dir(study), scratch / "results"),
            Path(figdir) if figdir else scratch / "figures", cfg)


def scratch_copy(src: Path, dst: Path) -> Path:
    """Copy the files of `src` (not its notebooks/) into `dst`. Files a notebook made there are kept
    (04's products for 05-07), unless an input table (INPUTS) differs from the source's: then the
    shipped results changed and everything is copied again."""
    import shutil
    if not src.is_dir():
        raise ContractError(f"{src}: no shipped results to explore (run the study or name `results`)")
    dst.mkdir(parents=True, exist_ok=True)
    stale = any(not (dst / n).is_file() or io.sha256_file(dst / n) != io.sha256_file(src / n)
                for n in INPUTS if (src / n).is_file())
    for f in sorted(src.iterdir()):
        if f.is_file() and (stale or not (dst / f.name).exists()):
            shutil.copy2(f, dst / f.name)
    return dst


# --------------------------------------------------------------------------------------------- output

def write_json(obj, path: str | Path) -> Path:
    """Write `obj` as sorted, indented JSON atomically; NaN and infinities become null (io.write_json)."""
    return io.write_json(path, obj, default=None)


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """Git commit of the code, read once per process (so one run's products all agree)."""
    return git_commit()


@functools.lru_cache(maxsize=1)
def code_versions() -> dict[str, str]:
    """Package versions that can change results (read once per process)."""
    return versions((*PACKAGES, "matplotlib"))


def _rng(seed: int, product: str) -> np.random.Generator:
    """Generator seeded by (seed, crc32(product)): one independent stream per product."""
    return np.random.default_rng([int(seed), zlib.crc32(product.encode())])


def study_label(cfg: Study, results: str | Path | None = None) -> tuple[str, str]:
    """What the results are, (label, figure title): on the embedded models a small-model replication,
    never the paper's numbers; a profile other than the default is named; results gathered from GPU
    leases that have not finished the cohort (`results`/leases.json, silentzone gather-leases) say
    "interim" and how many of the profile's quants they hold."""
    model = cfg.reference.model
    prof = "" if cfg.profile_name == "default" else f", {cfg.profile_name} profile"
    leases = Path(results) / "leases.json" if results else None
    if leases is not None and leases.is_file():
        info = json.loads(leases.read_text())
        if info.get("left_out"):
            prof += f", interim: {len(info['gathered'])} of {info['n_quants_profile']} quants"
    if model.startswith("embedded:"):
        name = EMBEDDED_NAMES.get(model.split(":", 1)[1], model.split(":", 1)[1])
        where = "embedded default" if not prof else f"embedded{prof}"
        return (f"small-model replication ({name}, {where}), not the paper's models",
                f"{cfg.study}: {name}, small-model replication{prof}")
    return f"replication on {model} (study {cfg.study}{prof})", f"{cfg.study}: {model}{prof}"


def _ci(row: pd.Series) -> list:
    """[ci_lo, ci_hi] of a correlation row (None where undefined)."""
    return [io.finite(float(row["ci_lo"])), io.finite(float(row["ci_hi"]))]


# ------------------------------------------------------------------------------------------- products

def decomposition_products(results: str | Path, cfg: Study) -> dict[str, Path]:
    """Full cohort vs silent zone, the volume-direction decomposition, item-level uncertainty, the noise
    ceiling and the headline numbers.

    Writes into `results`:
      cohort.csv                  `analysis.cohort_table` of the primary corpus/ctx (exact score_num /
                                  score_den columns beside the floats) plus in_zone, the composite
                                  vol_rate and f of each quant (decomposition), se (score SE over items),
                                  se_paired (paired SE of score - reference) and p_in_zone (share of item
                                  resamples that put the quant in the zone)
      full_vs_zone.csv            rho(primary metric, composite score) and rho(primary metric, vol_rate),
                                  full cohort and zone: columns target, scope, metric, definition,
                                  threshold, corpus, ctx, CORR_COLUMNS (quant-resampling CIs, permutation p)
      decomposition.csv           `analysis.decomposition` (per quant x task and composite; identity
                                  checked; floats written exactly so it can be re-checked from the file)
      decomposition_correlations.csv  `analysis.decomposition_correlations` of every metric of the
                                  primary corpus/ctx (bootstrap for the primary metric only)
      noise_ceiling.csv           `analysis.uncertainty.items_for_power` for every truth model x coupling:
                                  truth, coupling, n_items (per task; the study's own count first),
                                  n_sims, rho_median, rho_lo, rho_hi, power, n_zone_median, slope
      stats.json                  `analysis.headline_stats` + label, title, quant-resampling CIs
                                  (rho_full_ci, rho_zone_ci, rho_vol_zone_ci, p_perm_zone), item-resampling
                                  CIs (`item_bootstrap_summary` keys), the hold-out zone rho (primary zone
                                  estimate, `holdout_headline` keys, same splits as holdout.csv), the noise
                                  ceiling at the study's items (ceiling_<truth>_rho_median/_lo/_hi,
                                  ceiling_<truth>_power, items_for_power_<truth>, for CEILING_COUPLING),
                                  n_full_rho and n_zone_rho, zone_rule, zone_threshold, ref_score,
                                  n_items_per_task, n_resamples, profile, provenance; for a profile
                                  that holds items back for task selection (power), ceiling_splits:
                                  the ceiling's power with every item of the shipped splits
                                  (splits_ceiling)
    Returns {file name: path}.
    """
    run = _Run(results, cfg)
    s, f, q, metric = run.samples, run.fidelity, run.quants, run.metric
    dec = A.decomposition(s)
    A.check_identity(dec)
    comp = dec[dec["task"] == COMPOSITE].set_index("model")
    cohort = run.cohort()
    others = [m for m in metric_columns(cohort) if m != metric]
    cohort["in_zone"] = A.zone_mask(cohort, run.definition, run.threshold, metric).to_numpy()
    cohort["vol_rate"] = comp["vol_rate"].reindex(cohort["quant_id"]).to_numpy(float)
    cohort["f"] = comp["f"].reindex(cohort["quant_id"]).to_numpy(float)
    se = U.score_se(s).set_index("model")
    cohort["se"] = se["se"].reindex(cohort["quant_id"]).to_numpy(float)
    cohort["se_paired"] = se["se_paired"].reindex(cohort["quant_id"]).to_numpy(float)
    boot = U.item_bootstrap(s, f, q, run.corpus, run.ctx, run.rng("item_bootstrap"), metric, run.definition,
                            run.threshold, n_resamples=run.n_resamples)
    p_zone = U.zone_probability(boot).set_index("quant_id")["p_in_zone"]
    cohort["p_in_zone"] = p_zone.reindex(cohort["quant_id"]).to_numpy(float)

    rng = run.rng("full_vs_zone")
    fz = pd.concat([A.full_vs_zone(cohort, metric, target, run.definition, run.threshold, rng,
                                   run.n_resamples) for target in ("score", "vol_rate")], ignore_index=True)
    fz.insert(0, "target", fz.pop("target"))
    fz.insert(5, "corpus", run.corpus)
    fz.insert(6, "ctx", run.ctx)

    corr = pd.concat(
        [A.decomposition_correlations(s, f, q, run.corpus, run.ctx, [metric], run.definition, run.threshold,
                                      run.rng("decomposition_correlations"), run.n_resamples)]
        + ([A.decomposition_correlations(s, f, q, run.corpus, run.ctx, others, run.definition,
                                         run.threshold)] if others else []), ignore_index=True)

    ceiling, needed = noise_ceiling_table(run)
    hold = run.holdout()
    stats = A.headline_stats(s, f, q, run.corpus, run.ctx, metric, run.definition, run.threshold)
    row = {(t, sc): r for (t, sc), r in fz.set_index(["target", "scope"]).iterrows()}
    label, title = study_label(cfg, results)
    n_items = s[s["model"] == A.REFERENCE].groupby("task").size()
    stats.update(label=label, title=title, zone_rule=run.definition, zone_threshold=run.threshold,
                 n_resamples=run.n_resamples, rho_full_ci=_ci(row["score", "full"]),
                 rho_zone_ci=_ci(row["score", "zone"]), rho_vol_zone_ci=_ci(row["vol_rate", "zone"]),
                 p_perm_zone=io.finite(float(row["score", "zone"]["p_perm"])),
                 # n_zone counts zone members; a member without the metric (fidelity failed) has no pair
                 n_full_rho=int(row["score", "full"]["n"]), n_zone_rho=int(row["score", "zone"]["n"]),
                 ref_score=float(cohort["ref_score"].iloc[0]) if len(cohort) else None,
                 n_items_per_task={str(t): int(n) for t, n in n_items.items()},
                 profile=cfg.profile_name, provenance=run.provenance("stats.json"))
    stats.update({k: v for k, v in U.item_bootstrap_summary(boot).items()
                  if k not in ("rho_zone", "rho_full", "n_zone")})
    stats.update(A.holdout_headline(A.holdout_summary(hold)))
    stats.update(_ceiling_keys(ceiling, needed))
    splits = split_items(cfg)
    if splits:
        stats["ceiling_splits"] = splits_ceiling(run, splits)
    out = {"cohort.csv": run.write(cohort, "cohort.csv"),  # stats.json last: write_stats checks STATS_KEYS
           "full_vs_zone.csv": run.write(fz, "full_vs_zone.csv"),
           "decomposition.csv": run.write(dec, "decomposition.csv", exact=True),
           "decomposition_correlations.csv": run.write(corr, "decomposition_correlations.csv"),
           "noise_ceiling.csv": run.write(ceiling, "noise_ceiling.csv", n_sims=CEILING_SIMS,
                                          grid=list(U.POWER_GRID))}
    out["stats.json"] = write_stats(io.finite(stats), run.r / "stats.json")
    return out


def noise_ceiling_table(run: "_Run") -> tuple[pd.DataFrame, dict]:
    """`analysis.uncertainty.noise_ceiling` at the study's own items per task and over POWER_GRID, for
    every truth model x coupling (one generator per pair, seeded from its name). Returns (table,
    {(truth, coupling): items per task needed for 80% power or None})."""
    rows, needed = [], {}
    for truth in CEILING_TRUTHS:
        for coupling in CEILING_COUPLINGS:
            rng = run.rng(f"noise_ceiling/{truth}/{coupling}")
            kw = dict(metric=run.metric, truth=truth, definition=run.definition, threshold=run.threshold,
                      n_sims=CEILING_SIMS, coupling=coupling)
            own = U.noise_ceiling(run.samples, run.fidelity, run.quants, run.corpus, run.ctx, rng, **kw)
            grid, need = U.items_for_power(run.samples, run.fidelity, run.quants, run.corpus, run.ctx, rng,
                                           **kw)
            rows += [dict(own, study_items=True)] + [dict(r, study_items=False) for r in grid.to_dict("records")]
            needed[truth, coupling] = need
    return pd.DataFrame(rows), needed


def split_items(cfg: Study) -> dict[str, int] | None:
    """{task: items of its shipped split the study may draw} for a profile that holds items back for
    its task-selection rule (profile.selection_items > 0: the powered profile), the split less those
    items; None for other profiles (their item counts are a sample size, not a cap below the data)."""
    k = int(cfg.profile.selection_items)
    if k <= 0:
        return None
    from ..bench.tasks import TASKS
    return {t: len(TASKS[t].items(held_back=k, held_seed=cfg.held_seed)) for t in cfg.tasks}


def splits_ceiling(run: "_Run", splits: dict[str, int]) -> dict:
    """stats.json's `ceiling_splits`: the noise ceiling's power (CEILING_COUPLING, both truths) with every
    item that each task's shipped split gives the study (split_items), beside the profile's own counts:
    how far scoring more of the shipped data would take the zone test."""
    out = {"items_per_task": dict(splits), "coupling": CEILING_COUPLING, "n_sims": CEILING_SIMS}
    for truth in CEILING_TRUTHS:
        rng = run.rng(f"noise_ceiling_splits/{truth}")
        r = U.noise_ceiling(run.samples, run.fidelity, run.quants, run.corpus, run.ctx, rng, metric=run.metric,
                            truth=truth, n_items=splits, definition=run.definition, threshold=run.threshold,
                            n_sims=CEILING_SIMS, coupling=CEILING_COUPLING)
        out[f"{truth}_power"] = r["power"]
    return out


def _ceiling_keys(table: pd.DataFrame, needed: dict, coupling: str | None = None) -> dict:
    """stats.json keys of the noise ceiling at the study's own item counts, for `coupling` (default
    CEILING_COUPLING)."""
    coupling = coupling or CEILING_COUPLING
    out = {"ceiling_coupling": coupling, "ceiling_sims": CEILING_SIMS}
    own = table[table["study_items"] & (table["coupling"] == coupling)].set_index("truth")
    for truth in CEILING_TRUTHS:
        r = own.loc[truth]
        out.update({f"ceiling_{truth}_rho_median": r["rho_median"], f"ceiling_{truth}_rho_lo": r["rho_lo"],
                    f"ceiling_{truth}_rho_hi": r["rho_hi"], f"ceiling_{truth}_power": r["power"],
                    f"items_for_power_{truth}": needed[truth, coupling]})
    return {k: io.finite(float(v)) if isinstance(v, (float, np.floating)) else v for k, v in out.items()}


def sensitivity_products(results: str | Path, cfg: Study, margin: float = TOST_MARGIN,
                         bootstrap_all: bool = False) -> dict[str, Path]:
    """Is the zone result an artefact of the threshold, the variant, the selection or the sample size?

    Writes into `results`:
      sweep.csv            `analysis.sweep` over zone.sweep thresholds for every corpus x ctx x metric:
                           corpus, ctx, metric, definition, threshold, n_cohort, CORR_COLUMNS (bootstrap
                           for the primary corpus/ctx and FIGURE_METRICS, else Fisher z only)
      holdout.csv          `analysis.holdout` (profile.holdout_splits splits, seeds.holdout): split,
                           n/rho/p for heldout, insample and full
      holdout_summary.csv  `analysis.holdout_summary`: scope, n_splits_valid, rho_median, rho_mean,
                           rho_lo, rho_hi, frac_significant, n_median
      robustness.csv       `analysis.robustness_table` (every variant, Holm-adjusted, TOST at `margin`;
                           held-out zone rho per variant on the hold-out splits for score-based zones)
      power.csv            per scope (full, zone) of the primary variant: n, rho, p, alpha, mdr (minimum
                           |rho| detectable with power 0.8), power_at_margin, power_at_full_rho (power to
                           detect the full-cohort rho at this n), margin, tost_p_lower, tost_p_upper,
                           tost_p, equivalent (|rho| < margin shown by TOST at alpha)
    Returns {file name: path}.
    """
    run = _Run(results, cfg)
    s, f, q = run.samples, run.fidelity, run.quants
    thresholds = [float(t) for t in cfg.zone.sweep]
    n = run.n_resamples
    if bootstrap_all:
        sw = A.sweep(s, f, q, thresholds, run.definition, rng=run.rng("sweep"), n_resamples=n)
    else:
        plain = A.sweep(s, f, q, thresholds, run.definition)
        primary = (plain["corpus"] == run.corpus) & (plain["ctx"] == run.ctx)
        shown = [m for m in dict.fromkeys((run.metric, *FIGURE_METRICS)) if m in set(plain["metric"])]
        boot = A.sweep(s, f[(f["corpus"] == run.corpus) & (f["ctx"] == run.ctx)], q, thresholds,
                       run.definition, metrics=shown, rng=run.rng("sweep"), n_resamples=n)
        sw = pd.concat([plain[~(primary & plain["metric"].isin(shown))], boot])
        sw = sw.sort_values(["corpus", "ctx", "metric", "threshold"], kind="stable").reset_index(drop=True)

    hold = run.holdout()
    summary = A.holdout_summary(hold)
    zones = A.distinct_zones(sw[(sw["corpus"] == run.corpus) & (sw["ctx"] == run.ctx)
                                & (sw["metric"] == run.metric)])
    # held-out zone rho of every variant on the primary hold-out's splits (same generator and seed as
    # holdout.csv, so the primary variant's row repeats stats.json's rho_zone_heldout)
    held = run.definition in ("relative", "absolute")
    rob = A.robustness_table(s, f, q, run.definition, run.threshold,
                             run.rng("robustness") if bootstrap_all else None, n, margin=margin, alpha=ALPHA,
                             holdout_rng=run.rng("holdout", run.cfg.seeds.holdout) if held else None,
                             holdout_splits=int(run.cfg.profile.holdout_splits) if held else 0)
    power = power_table(run.cohort(), run.metric, run.definition, run.threshold, margin)
    params = dict(margin=margin, bootstrap_all=bootstrap_all, figure_metrics=list(FIGURE_METRICS))
    return {name: run.write(frame, name, **params) for name, frame in
            (("sweep.csv", sw), ("sweep_zones.csv", zones), ("holdout.csv", hold),
             ("holdout_summary.csv", summary), ("robustness.csv", rob), ("power.csv", power))}


def power_table(cohort: pd.DataFrame, metric: str, definition: str, threshold: float,
                margin: float = TOST_MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """Power and equivalence of rho(metric, score) over the full cohort and inside the zone.

    cohort: `analysis.cohort_table` frame. Returns two rows (scope full, zone) with the columns listed
    in `sensitivity_products` (Fisher-z approximations, `analysis.stats`). An absent correlation in
    the zone is only evidence when `equivalent` is True; otherwise the zone is too small to say.
    """
    fz = A.full_vs_zone(cohort, metric, "score", definition, threshold).set_index("scope")
    rho_full = float(np.clip(fz.loc["full", "rho"], -_RHO_MAX, _RHO_MAX))  # atanh(+-1) is infinite
    rows = []
    for scope in ("full", "zone"):
        n, rho = int(fz.loc[scope, "n"]), float(fz.loc[scope, "rho"])
        tost = A.tost_rho(rho, n, margin, alpha)
        rows.append(dict(scope=scope, metric=metric, definition=definition, threshold=threshold, n=n, rho=rho,
                         p=float(fz.loc[scope, "p"]), alpha=alpha, mdr=A.min_detectable_rho(n, alpha),
                         power_at_margin=A.power_rho(margin, n, alpha),
                         power_at_full_rho=A.power_rho(rho_full, n, alpha) if math.isfinite(rho_full)
                         else math.nan,
                         margin=margin, tost_p_lower=tost["p_lower"], tost_p_upper=tost["p_upper"],
                         tost_p=tost["p"], equivalent=bool(tost["equivalent"])))
    return pd.DataFrame(rows)


def routing_models(cohort: pd.DataFrame, samples: pd.DataFrame, metric: str,
                   k: int = ROUTING_MAX) -> list[str]:
    """The quants routed between: the `k` cohort quants with the lowest `metric` (ties by quant_id)
    among those with per-prompt KLD in `samples`, in that order."""
    has_kld = set(samples.loc[np.isfinite(samples["kld_mean"].to_numpy(float)), "model"].astype(str))
    c = cohort[cohort["quant_id"].isin(has_kld) & np.isfinite(cohort[metric].to_numpy(float))]
    return list(c.sort_values([metric, "quant_id"], kind="stable")["quant_id"].head(k))


def per_prompt_products(results: str | Path, cfg: Study,
                        n_resamples: int | None = None) -> dict[str, Path]:
    """Does a prompt's KLD predict failure, and can KLD route a prompt to the better model?

    Writes into `results`:
      failure_prediction.csv  `analysis.failure_prediction` of every cohort quant, pooled over tasks
                              (task == "all") and per task: model, task, n, n_failed, gm_failed,
                              gm_passed, gm_ratio, ratio_lo, ratio_hi, auroc, auroc_lo, auroc_hi, p_mw,
                              n_floored (per-prompt kld_mean, bootstrap over prompts with
                              n_resamples, default min(profile.bootstrap, PER_PROMPT_RESAMPLES))
      drop_prediction.csv     `analysis.drop_prediction`: the same on the items the reference answers
                              correctly only (drops vs kept; STATS.md section 5), pooled and per task:
                              model, task, n_kept, n_drops, gm_ratio, ratio_lo/_hi, auroc, auroc_lo/_hi, ...
      routing.csv             `analysis.routing` for every pair among `routing_models` (the ROUTING_MAX
                              quants closest to the reference by the primary metric) and for all of them
                              together: pair, n_models, then routing's columns (one row per task + "all")
    Returns {file name: path}.
    """
    run = _Run(results, cfg)
    cohort = run.cohort()
    s = run.samples
    n_fail = min(run.n_resamples, PER_PROMPT_RESAMPLES) if n_resamples is None else int(n_resamples)
    rng = run.rng("failure_prediction")
    pooled = A.failure_prediction(s, rng, n_fail, by=("model",)).assign(task="all")
    per_task = A.failure_prediction(s, rng, n_fail, by=("model", "task"))
    # no quant with per-prompt KLD gives empty frames without columns: keep the header
    fail = pd.concat([pooled.reindex(columns=FAIL_COLUMNS), per_task.reindex(columns=FAIL_COLUMNS)],
                     ignore_index=True)
    drops = A.drop_prediction(s, run.rng("drop_prediction"), n_fail)

    models = routing_models(cohort, s, run.metric)
    sets = [[a, b] for i, a in enumerate(models) for b in models[i + 1:]]
    if len(models) > 2:
        sets.append(models)
    rng = run.rng("routing")
    frames = []
    for i, ms in enumerate(sets):
        r = A.routing(s, ms, rng, run.n_resamples)
        r.insert(0, "pair", i)
        r.insert(1, "n_models", len(ms))
        frames.append(r)
    route = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=list(ROUTING_COLUMNS)))
    return {"failure_prediction.csv": run.write(fail, "failure_prediction.csv",
                                                n_resamples_per_prompt=n_fail),
            "drop_prediction.csv": run.write(drops, "drop_prediction.csv", n_resamples_per_prompt=n_fail),
            "routing.csv": run.write(route, "routing.csv", routing_models=models)}
