"""Compare a study's results directory with another copy (a git revision or a directory).

    silentzone compare-results --against HEAD smollm2 gemma3        # after `make paper`
    silentzone compare-results --against /other/data smollm2

What must match, and how closely (TOLERANCES): the cohort (quant ids, status, method, requested
type, bits per weight, artifact bytes and sha256 of deterministic quants), fidelity values
(relative 1e-4), per-prompt correctness and margins (exact / 1e-3 nats) and stats.json's headline
numbers (1e-6). Figures (PNG and PDF under figures/<study>) are compared byte for byte and only
reported: matplotlib's output is deterministic here, but fonts and renderer versions of another
machine may move pixels without any number moving. Quants whose tool is not bit-reproducible (manifest column deterministic=False:
GPTQ and AWQ through llm-compressor) are compared too but only reported, never failed, because a
fresh cache remakes them with small differences; the headline numbers depend on them, so a
difference there is reported with the non-deterministic quants named. Headline numbers that move
while every table is equal mean the analysis changed: that fails.

Nothing compared is never a match: an `against` that is neither a directory nor a git revision, or a
study without results here, is a one-line CompareError; a study with no tables in the other copy, or a
table that one copy lacks, is a difference.

A rerun on another engine (`--cross-engine`: llama.cpp on CUDA rather than the CPU, another KV
cache) moves numbers well beyond TOLERANCES; ENGINE_TOLERANCES state what must hold instead:

    silentzone compare-results --cross-engine --against /gpu/run/data smollm2

- fidelity.csv: the same token windows (tokens_hash, n_tokens); per (corpus, ctx, metric), the
  Spearman rho of the values across the quants both copies have >= rank_rho_min (at least
  rank_min_quants of them; a metric constant across quants in both copies, ppl_ref, has its values
  reported). Each quant's relative differences are reported; one whose kld_mean moves by more than
  sensitive_factor either way is named engine-sensitive (a note: Q4_1 on CUDA).
- samples.csv: the same items (item and prompt hashes). The reference's `correct` equal per (task,
  item_id) except near-ties, answers whose |margin| < tie_margin nats in either copy (counted, a note).
  A quant's answers move more with the engine (its kernels, not only the float path: Q8_0 and Q6_K on
  CUDA against the CPU moved margins by a median 0.12-0.17 nats and flipped 8 of ~540 SciQ answers
  each, 2 of them beyond the tie; docs/performance.md), so per (quant, task) its flips outside
  near-ties may number at most flip_rate_max of the items, and must not lean one way: the exact
  two-sided binomial test of gains against losses among them (McNemar's) keeps p >= flip_shift_p.
  A generation item has no margin (NaN): its answer must be equal. Margins are reported, not failed.
- quants.csv: the same quant ids, and status, method, requested type and bits per weight equal;
  bytes and sha256 reported (another build of the quantizer may write other bytes; the tensors are
  judged by fidelity and samples).
- stats.json: its strings (study, metric, zone rule, ...) and ENGINE_EXACT_STATS (the design: quant
  and item counts, resamples, ctx, zone threshold) equal; every other headline number is reported
  with its difference, not failed: it follows the engine's fidelity and answers.
Non-deterministic quants' cohort and answer differences stay notes, as above; they count in the
rankings.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SilentzoneError
from ..paths import DATA, FIGURES, REPO

TOLERANCES = {"fidelity_rel": 1e-4, "margin_abs": 1e-3, "kld_rel": 1e-4, "stats_abs": 1e-6}
QUANT_COLS = ("status", "method", "requested_type", "bpw", "bytes")
TABLES = ("quants.csv", "fidelity.csv", "samples.csv", "stats.json")

# --cross-engine (module doc). Measured (docs/performance.md, "The powered profile on the GPU"): 21
# GGUF quants' fidelity made on an H100 (llama.cpp CUDA, F32-cache reference) against the shipped
# CPU tables, same token windows: Spearman rho across quants 0.987 for kld_mean (wiki 512), 0.914 at
# the lowest of the 104 rankable (corpus, ctx, metric) groups (code 512 dp_max_abs; 0.95 would fail
# 11 of them, mostly tail quantiles and maxima, which a few tokens decide); kld_mean within
# x0.90-1.35 of the CPU value for 20 quants (Q8_0 the highest), x4.8 for Q4_1 (nearly lossless on
# the CPU, where SmolLM2's source is itself a Q4_1 GGUF). An F16 against an F32 KV cache moves
# per-token log-likelihoods by up to 2.6e-2 nats (SmolLM2; Gemma 3 3.7e-2; docs/workflow.md): a
# margin (a difference of two summed log-likelihoods) within a few such shifts of zero may flip;
# 1.4% of the shipped SmolLM2 answers and 1.5% of Gemma 3's have |margin| < 0.1 nats.
# Measured since (docs/performance.md, 2026-12-06): the F32 reference on CUDA vs the CPU flips 2 of
# 3,170 answers, both near-ties; GGUF quants (Q8_0, Q6_K) on CUDA vs the CPU move margins by a median
# 0.12-0.17 nats and flip 2 of ~540 SciQ answers each beyond 0.1 nats (8 with the near-ties): the
# tie rule stays the reference's, and a quant's flips beyond it are held to a rate and a direction
# instead. flip_rate_max 3% is about eight times the measured 0.37% (2 of ~540) and twice the 1.5% of
# all flips, near-ties included; flip_shift_p asks that the flips not lean one way, which a real
# change of the quant's quality would make them do (tests/workflow/test_compare_engine.py checks the
# measured pairs pass it and the tie rule alone fails them).
ENGINE_TOLERANCES = {
    "rank_rho_min": 0.90,      # Spearman rho across the common quants, per (corpus, ctx, metric)
    "rank_min_quants": 5,      # fewer common quants rank nothing (one swap of 5 gives 0.9): differs
    "sensitive_factor": 2.0,   # kld_mean x2 or x1/2 in any window: engine-sensitive, a note
    "tie_margin": 0.1,         # nats: an answer flip with |margin| below it in either copy is a near-tie
    "flip_rate_max": 0.03,     # a quant's flips outside near-ties, per task: at most this share of its items
    "flip_shift_p": 0.01,      # ... and McNemar's exact p of gains vs losses among them at least this
}
# stats.json numbers that describe the design, not its outcome: equal on any engine.
ENGINE_EXACT_STATS = ("n_quants", "n_items_per_task", "ctx", "zone_threshold", "n_resamples",
                      "n_item_resamples", "ceiling_sims")


class CompareError(SilentzoneError):
    """Nothing can be compared: the other copy is not there, or a study has no results (one line)."""


def _git_show(rev: str, path: Path) -> bytes | None:
    """The bytes of repository file `path` at git revision `rev`, or None if it has none."""
    rel = path.relative_to(REPO).as_posix()
    r = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{rel}"], capture_output=True)
    return r.stdout if r.returncode == 0 else None


def _is_revision(rev: str) -> bool:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True)
    return r.returncode == 0


def _reader(against: str, study: str):
    """read(name) -> text of data/<study>/<name> in `against` (a directory or a git revision), None
    when that copy has no such file; CompareError when `against` is neither."""
    root = Path(against)
    if root.is_dir():
        return lambda name: (root / study / name).read_text() if (root / study / name).is_file() else None
    if not _is_revision(against):
        raise CompareError(f"compare-results: --against {against}: neither a directory nor a git revision "
                           "of this repository")

    def from_git(name: str):
        b = _git_show(against, DATA / study / name)
        return None if b is None else b.decode()
    return from_git


def _csv(text: str | None) -> pd.DataFrame | None:
    return None if text is None else pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])


def compare_figures(study: str, against: str, figures: Path | None = None,
                    figures_against: Path | None = None) -> list[tuple[str, str, str]]:
    """'ok' when every regenerated figure (PNG, PDF) in `figures` (default figures/<study>) equals
    the other copy byte for byte, else also one 'note' naming those that differ or have no
    counterpart (never a failure: see the module doc). The other copy: `figures_against`, or
    figures/<study> at git revision `against`; nothing is compared when `against` is a directory
    and no `figures_against` is given, or when there are no figures."""
    figures = Path(figures or FIGURES / study)
    if figures_against is None and Path(against).is_dir():
        return []
    names = sorted(f.name for f in figures.glob("*") if f.suffix in (".png", ".pdf"))
    if not names:
        return []

    def old_bytes(name: str) -> bytes | None:
        if figures_against is None:
            return _git_show(against, FIGURES / study / name)
        f = Path(figures_against) / name
        return f.read_bytes() if f.is_file() else None
    same, other = [], []
    for n in names:
        old = old_bytes(n)
        (same if old is not None and old == (figures / n).read_bytes() else other).append(n)
    rows = [("ok", f"figures/{study}/", f"{len(same)} of {len(names)} figures byte-identical")]
    if other:
        rows.append(("note", f"figures/{study}/", "differ or not in the other copy: " + ", ".join(other)))
    return rows


def _shown(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def _missing_results(study: str, results: Path) -> CompareError:
    where = _shown(results)
    parent = results.parent
    known = sorted(d.name for d in parent.iterdir()
                   if d.is_dir() and any((d / n).is_file() for n in TABLES)) if parent.is_dir() else []
    return CompareError(f"compare-results: {where}: no results of study {study!r} to compare (none of "
                        f"{', '.join(TABLES)}; studies with results: {', '.join(known) or 'none'})")


def compare_study(study: str, against: str, results: Path | None = None, figures: Path | None = None,
                  figures_against: Path | None = None, engine: bool = False) -> list[tuple[str, str, str]]:
    """Rows (level, what, message): level 'ok', 'differs' (fails) or 'note' (reported only).
    figures: the regenerated figures/<study> (default the repository's); figures_against: the
    other copy's, when `against` is a directory (a git revision holds its own). engine: the rerun
    ran on another engine: ENGINE_TOLERANCES instead of TOLERANCES (module doc).
    CompareError (one line) when `results` holds no table or `against` is neither a directory nor a
    git revision; a study that the other copy lacks, or a table one copy lacks, is a 'differs' row."""
    results = Path(results or DATA / study)
    if not any((results / n).is_file() for n in TABLES):
        raise _missing_results(study, results)
    old = _reader(against, study)
    olds = {n: old(n) for n in TABLES}
    if all(t is None for t in olds.values()):  # nothing was compared: never a match
        return [("differs", f"{study}/", f"nothing to compare: {against} has none of {', '.join(TABLES)} "
                 f"for study {study!r}")]
    out = compare_figures(study, against, figures, figures_against)
    for n in TABLES:
        for side, found in ((_shown(results), (results / n).is_file()), (str(against), olds[n] is not None)):
            if not found:
                out.append(("differs", f"{study}/{n}", f"not in {side}"))
    have = {n: (results / n).is_file() and olds[n] is not None for n in TABLES}
    if engine:
        return out + _compare_engine(study, against, results, olds, have)

    nondet, moved = set(), set()  # non-deterministic quants; those of them whose rows differ
    if have["quants.csv"]:
        new_q, old_q = pd.read_csv(results / "quants.csv"), _csv(olds["quants.csv"])
        nondet = set(new_q.loc[~new_q["deterministic"].astype(bool), "quant_id"]) \
            if "deterministic" in new_q else set()
        if sorted(new_q["quant_id"]) != sorted(old_q["quant_id"]):
            out.append(("differs", f"{study}/quants.csv", "the cohorts list different quants"))
            return out
        a, b = new_q.set_index("quant_id"), old_q.set_index("quant_id").loc[new_q["quant_id"]]
        # llama-imatrix and llama-quantize record the calibration text's and the imatrix file's paths in
        # the GGUF's metadata (quantize.imatrix.file / .dataset). They get bare names since 1bdfc7e, but
        # the shipped quants and older caches were made with absolute paths, whose bytes and sha256 move
        # with $SILENTZONE_HOME: reported only; the tensors are compared through fidelity and samples
        # below, which do fail.
        imat = {q for q in a.index if "imatrix" in str(a.at[q, "recipe"])} if "recipe" in a else set()
        for col in QUANT_COLS + ("sha256",):
            ne = [q for q in a.index if not _same(a.at[q, col], b.at[q, col])]
            for q in ne:
                level = "note" if q in nondet or (q in imat and col in ("bytes", "sha256")) else "differs"
                moved |= {q} & nondet
                out.append((level, f"{study}/quants.csv", f"{q}.{col}: {b.at[q, col]!r} -> {a.at[q, col]!r}"))
        out.append(("ok", f"{study}/quants.csv", f"{len(a)} quants compared"))

    if have["fidelity.csv"]:
        new_f, old_f = pd.read_csv(results / "fidelity.csv"), _csv(olds["fidelity.csv"])
        key = ["quant_id", "corpus", "ctx", "metric"]
        m = new_f.merge(old_f, on=key, how="outer", suffixes=("", "_old"), indicator=True)
        if (m["_merge"] != "both").any():
            out.append(("differs", f"{study}/fidelity.csv",
                        f"{int((m['_merge'] != 'both').sum())} rows in one copy only"))
        both = m[m["_merge"] == "both"]
        rel = (both["value"] - both["value_old"]).abs() / both["value_old"].abs().clip(lower=1e-12)
        bad = both[(rel > TOLERANCES["fidelity_rel"]) & ~(both["value"].isna() & both["value_old"].isna())]
        for q, g in bad.groupby("quant_id"):
            level = "note" if q in nondet else "differs"
            moved |= {q} & nondet
            out.append((level, f"{study}/fidelity.csv", f"{q}: {len(g)} values beyond rel "
                        f"{TOLERANCES['fidelity_rel']}, max rel {float(rel[g.index].max()):.3g}"))
        out.append(("ok", f"{study}/fidelity.csv", f"{len(both)} values compared"))

    if have["samples.csv"]:
        new_s, old_s = pd.read_csv(results / "samples.csv"), _csv(olds["samples.csv"])
        key = ["model", "task", "item_id"]
        m = new_s.merge(old_s, on=key, how="outer", suffixes=("", "_old"), indicator=True)
        if (m["_merge"] != "both").any():
            out.append(("differs", f"{study}/samples.csv",
                        f"{int((m['_merge'] != 'both').sum())} rows in one copy only"))
        both = m[m["_merge"] == "both"]
        flip = both["correct"].astype(str) != both["correct_old"].astype(str)
        dm = (both["margin"] - both["margin_old"]).abs() > TOLERANCES["margin_abs"]
        for q, g in both[flip | dm].groupby("model"):
            level = "note" if q in nondet else "differs"
            moved |= {q} & nondet
            out.append((level, f"{study}/samples.csv", f"{q}: {int(flip[g.index].sum())} answers and "
                        f"{int(dm[g.index].sum())} margins differ"))
        out.append(("ok", f"{study}/samples.csv", f"{len(both)} rows compared"))

    if not have["stats.json"]:
        return out
    new_j, old_j = json.loads((results / "stats.json").read_text()), json.loads(olds["stats.json"])
    # Headline numbers may move with the non-deterministic quants alone, when their rows moved (a
    # note naming them). When a deterministic input differs above, they differ for that reason too;
    # when every table is equal, the analysis changed: both fail.
    upstream = any(level == "differs" for level, _, _ in out)
    for k, v in sorted(new_j.items()):
        if k == "provenance" or isinstance(v, (dict, list)):
            continue
        if not _same(v, old_j.get(k), TOLERANCES["stats_abs"]):
            msg = f"{k}: {old_j.get(k)!r} -> {v!r}"
            if upstream:
                out.append(("differs", f"{study}/stats.json", msg))
            elif moved:
                out.append(("note", f"{study}/stats.json",
                            f"{msg} (rows of non-deterministic quants differ: {sorted(moved)})"))
            else:
                out.append(("differs", f"{study}/stats.json",
                            f"{msg} (the tables are equal: the analysis changed)"))
    out.append(("ok", f"{study}/stats.json", "headline numbers compared"))
    return out


def fidelity_ranks(both: pd.DataFrame) -> pd.DataFrame:
    """Per (corpus, ctx, metric) of `both` (one row per quant with finite `value` and `value_old`):
    n (quants), rho (Spearman's, the Pearson correlation of the two copies' average ranks; NaN when
    a copy is constant across quants) and constant (constant in both copies: nothing to rank)."""
    rows = []
    for (corpus, ctx, metric), g in both.groupby(["corpus", "ctx", "metric"], sort=True):
        flat_new, flat_old = g["value"].nunique() <= 1, g["value_old"].nunique() <= 1
        rho = math.nan if flat_new or flat_old else \
            float(np.corrcoef(g["value"].rank(), g["value_old"].rank())[0, 1])
        rows.append({"corpus": corpus, "ctx": int(ctx), "metric": metric, "n": len(g), "rho": rho,
                     "constant": flat_new and flat_old})
    return pd.DataFrame(rows, columns=["corpus", "ctx", "metric", "n", "rho", "constant"])


def answer_flips(both: pd.DataFrame, tie: float) -> pd.DataFrame:
    """The rows of `both` (merged samples: correct, margin and their *_old, one item each) whose
    answer differs, with near_tie: |margin| < `tie` nats in either copy. A NaN margin (a generation
    item) is never a near-tie: a different greedy continuation has no margin to excuse it."""
    flip = both["correct"].astype(bool) != both["correct_old"].astype(bool)
    near = (both["margin"].abs() < tie) | (both["margin_old"].abs() < tie)  # NaN < tie is False
    return both[flip].assign(near_tie=near[flip])


def quant_flip_rule(flips: pd.DataFrame, n_items: pd.Series, tol: dict = ENGINE_TOLERANCES) -> tuple[str, str]:
    """("ok" | "differs", why) for one quant's answer flips across engines (`answer_flips` rows of one
    model; `n_items`: its compared items per task). Per task, the flips outside near-ties: none
    without a margin (a generation answer must be equal), at most flip_rate_max of the task's items,
    and McNemar's exact p (two-sided binomial of the new copy's gains against its losses) >=
    flip_shift_p. The counts are integers; the rate is compared as k <= rate * n."""
    from scipy.stats import binomtest
    hard = flips[~flips["near_tie"]]
    parts, bad = [], []
    for task, g in hard.groupby("task", sort=True):
        n = int(n_items[task])
        k = len(g)
        gains = int(g["correct"].astype(bool).sum())
        p = float(binomtest(gains, k, 0.5).pvalue)
        parts.append(f"{task} {k}/{n}: +{gains} -{k - gains}, p {p:.2g}")
        if g["margin"].isna().any() or g["margin_old"].isna().any():
            bad.append(f"{task}: a generation answer differs (no margin)")
        elif k > tol["flip_rate_max"] * n:
            bad.append(f"{task}: {k} of {n} items, over {tol['flip_rate_max']:.0%}")
        elif p < tol["flip_shift_p"]:
            bad.append(f"{task}: {gains} gains vs {k - gains} losses, McNemar p {p:.2g} < {tol['flip_shift_p']:g}")
    if bad:
        return "differs", "; ".join(bad)
    return "ok", "; ".join(parts)


def _validated(read, new: Path, old_text: str, where_old: str):
    """(new, old) frames through a schema reader `read(path)`; ContractError -> one-line CompareError
    naming the file (the other copy's as `where_old`, not the temporary file it is read from)."""
    from ..tables import ContractError
    try:
        a = read(new)
    except ContractError as e:
        raise CompareError(f"compare-results: {e}") from None
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / new.name
        f.write_text(old_text)
        try:
            return a, read(f)
        except ContractError as e:
            raise CompareError(f"compare-results: {str(e).replace(str(f), where_old)}") from None


def _json(text: str, where: str) -> dict:
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompareError(f"compare-results: {where}: not JSON ({e})") from None
    if not isinstance(j, dict):
        raise CompareError(f"compare-results: {where}: not a JSON object")
    return j


def _compare_engine(study: str, against: str, results: Path, olds: dict, have: dict) -> list:
    """compare_study's table rows under ENGINE_TOLERANCES (module doc)."""
    from ..bench.run import read_samples
    from ..tables import FIDELITY, QUANTS, read_table
    tol, out = ENGINE_TOLERANCES, []

    def where(n: str) -> str:
        return str(Path(against) / study / n) if Path(against).is_dir() else \
            f"{against}:{(DATA / study / n).relative_to(REPO).as_posix()}"

    nondet = set()
    if have["quants.csv"]:
        w = f"{study}/quants.csv"
        new_q, old_q = _validated(lambda p: read_table(p, QUANTS), results / "quants.csv",
                                  olds["quants.csv"], where("quants.csv"))
        if "deterministic" in new_q:
            nondet = set(new_q.loc[~new_q["deterministic"].astype(bool), "quant_id"])
        ids_new, ids_old = set(new_q["quant_id"]), set(old_q["quant_id"])
        if ids_new != ids_old:
            out.append(("differs", w, f"the cohorts list different quants (only here: "
                        f"{sorted(ids_new - ids_old)}, only in {against}: {sorted(ids_old - ids_new)})"))
        a = new_q.set_index("quant_id")
        b = old_q.set_index("quant_id")
        common = [q for q in a.index if q in ids_old]
        for col in ("status", "method", "requested_type", "bpw", "bytes", "sha256"):
            for q in common:
                if not _same(a.at[q, col], b.at[q, col]):
                    level = "note" if q in nondet or col in ("bytes", "sha256") else "differs"
                    out.append((level, w, f"{q}.{col}: {b.at[q, col]!r} -> {a.at[q, col]!r}"))
        out.append(("ok", w, f"{len(common)} quants compared (status, method, type, bits per weight "
                    "equal; bytes and sha256 reported)"))

    if have["fidelity.csv"]:
        w = f"{study}/fidelity.csv"
        new_f, old_f = _validated(lambda p: read_table(p, FIDELITY), results / "fidelity.csv",
                                  olds["fidelity.csv"], where("fidelity.csv"))
        key = ["quant_id", "corpus", "ctx", "metric"]
        m = new_f.merge(old_f, on=key, how="outer", suffixes=("", "_old"), indicator=True)
        if (m["_merge"] != "both").any():
            out.append(("differs", w, f"{int((m['_merge'] != 'both').sum())} rows in one copy only"))
        both = m[m["_merge"] == "both"]
        other = (both["tokens_hash"] != both["tokens_hash_old"]) | (both["n_tokens"] != both["n_tokens_old"])
        if other.any():
            wins = sorted({f"{c}/{x}" for c, x in zip(both.loc[other, "corpus"], both.loc[other, "ctx"])})
            out.append(("differs", w, f"{int(other.sum())} values over other token windows "
                        f"({', '.join(wins)}): not compared"))
        both = both[~other]
        one_nan = both["value"].isna() != both["value_old"].isna()
        if one_nan.any():
            out.append(("differs", w, f"{int(one_nan.sum())} values NaN in one copy only: "
                        + ", ".join(sorted(set(both.loc[one_nan, 'quant_id'])))))
        both = both[both["value"].notna() & both["value_old"].notna()]
        ranks = fidelity_ranks(both)
        ranked = ranks[~ranks["constant"]]
        for r in ranked.itertuples():
            if r.n < tol["rank_min_quants"]:
                out.append(("differs", w, f"{r.corpus}/{r.ctx}/{r.metric}: {r.n} common quants, fewer "
                            f"than {tol['rank_min_quants']} to rank"))
            # 1e-12: one swap of 5 quants is rho 0.9 in exact arithmetic; NaN (one copy constant) fails
            elif not r.rho >= tol["rank_rho_min"] - 1e-12:
                out.append(("differs", w, f"{r.corpus}/{r.ctx}/{r.metric}: Spearman rho {r.rho:.3f} "
                            f"across {r.n} quants < {tol['rank_rho_min']}"))
        if len(ranked):
            lo = ranked.loc[ranked["rho"].fillna(-math.inf).idxmin()]
            out.append(("ok", w, f"{len(ranked)} (corpus, ctx, metric) rankings compared, lowest Spearman "
                        f"rho {lo['rho']:.3f} ({lo['corpus']}/{lo['ctx']}/{lo['metric']}, {lo['n']} quants), "
                        f"floor {tol['rank_rho_min']}"))
        flat = ranks[ranks["constant"]]
        if len(flat):
            vals = both.groupby(["corpus", "ctx", "metric"])[["value", "value_old"]].first()
            out.append(("ok", w, "constant across quants, values reported: " + ", ".join(
                f"{r.metric} {r.corpus}/{r.ctx} {vals.at[(r.corpus, r.ctx, r.metric), 'value_old']:.6g} -> "
                f"{vals.at[(r.corpus, r.ctx, r.metric), 'value']:.6g}" for r in flat.itertuples())))
        rel = (both["value"] - both["value_old"]).abs() / both["value_old"].abs().clip(lower=1e-12)
        f = tol["sensitive_factor"]
        for q, g in both.groupby("quant_id", sort=True):
            i = rel[g.index].idxmax()
            k = g[g["metric"] == "kld_mean"]
            ratio = k["value"] / k["value_old"].clip(lower=1e-12)
            sensitive = bool(((ratio > f) | (ratio < 1 / f)).any())
            kld = f"kld_mean x{ratio.min():.3g}-{ratio.max():.3g} over {len(k)} windows; " if len(k) else ""
            at = f"{both.at[i, 'metric']} {both.at[i, 'corpus']}/{both.at[i, 'ctx']}"
            out.append(("note" if sensitive else "ok", w,
                        f"{q}: {kld}{len(g)} values, median |rel| {float(rel[g.index].median()):.2g}, max "
                        f"{float(rel[i]):.2g} ({at})"
                        + (f"; engine-sensitive (kld_mean beyond x{f:g} or x1/{f:g})" if sensitive else "")))

    if have["samples.csv"]:
        w = f"{study}/samples.csv"
        new_s, old_s = _validated(read_samples, results / "samples.csv", olds["samples.csv"],
                                  where("samples.csv"))
        key = ["model", "task", "item_id"]
        m = new_s.merge(old_s, on=key, how="outer", suffixes=("", "_old"), indicator=True)
        if (m["_merge"] != "both").any():
            out.append(("differs", w, f"{int((m['_merge'] != 'both').sum())} rows in one copy only"))
        both = m[m["_merge"] == "both"]
        other = (both["item_hash"] != both["item_hash_old"]) \
            | (both["prompt_hash"] != both["prompt_hash_old"])
        if other.any():
            out.append(("differs", w, f"{int(other.sum())} rows whose item or prompt hash differs (other "
                        "items or prompts): not compared"))
        both = both[~other]
        flips = answer_flips(both, tol["tie_margin"])
        n_items = both.groupby(["model", "task"]).size()
        for q, g in flips.groupby("model", sort=True):
            hard, ties = int((~g["near_tie"]).sum()), int(g["near_tie"].sum())
            if not hard:
                out.append(("note", w, f"{q}: {ties} near-tie answer flips (|margin| < "
                            f"{tol['tie_margin']} nats in a copy)"))
                continue
            rule = quant_flip_rule(g, n_items[q], tol) if q != "reference" else None
            if rule is None or rule[0] == "differs":
                why = rule[1] if rule else f"|margin| >= {tol['tie_margin']} nats in both copies, or no margin"
                out.append(("note" if q in nondet else "differs", w,
                            f"{q}: {hard} answers differ outside near-ties ({why}), {ties} near-tie flips"))
            else:
                out.append(("note", w, f"{q}: {hard} answers differ outside near-ties, {ties} near-tie flips; "
                            f"within the engine rule ({rule[1]})"))
        dm = (both["margin"] - both["margin_old"]).abs().dropna()
        out.append(("ok", w, f"{len(both)} rows compared; {int(flips['near_tie'].sum())} near-tie flips "
                    f"in all; margins moved by median {float(dm.median()) if len(dm) else 0.0:.2g}, max "
                    f"{float(dm.max()) if len(dm) else 0.0:.2g} nats (reported)"))

    if have["stats.json"]:
        w = f"{study}/stats.json"
        new_j, old_j = (_json(t, f) for t, f in (((results / "stats.json").read_text(),
                                                   _shown(results / "stats.json")),
                                                  (olds["stats.json"], where("stats.json"))))
        for k, v in sorted(new_j.items()):
            if k == "provenance":
                continue
            u = old_j.get(k)
            if isinstance(v, str) or k in ENGINE_EXACT_STATS:
                if not (v == u if isinstance(v, (dict, list)) else _same(v, u)):
                    out.append(("differs", w, f"{k}: {u!r} -> {v!r} (the design must be equal)"))
            elif isinstance(v, (dict, list)):
                continue
            elif not _same(v, u, TOLERANCES["stats_abs"]):
                d = f" ({float(v) - float(u):+.3g})" if isinstance(u, (int, float)) and \
                    isinstance(v, (int, float)) else ""
                out.append(("note", w, f"{k}: {u!r} -> {v!r}{d}"))
        out.append(("ok", w, "design compared; headline numbers reported"))
    return out


def _same(x, y, tol: float = 0.0) -> bool:
    if isinstance(x, (int, float, np.number)) and isinstance(y, (int, float, np.number)) \
            and not isinstance(x, bool):
        if math.isnan(float(x)) and math.isnan(float(y)):
            return True
        return abs(float(x) - float(y)) <= tol * max(1.0, abs(float(y))) if tol else float(x) == float(y)
    return (x is None and y is None) or str(x) == str(y)


def main(studies, against: str, results: Path | None = None, engine: bool = False) -> int:
    """Print the comparison of every study (data/<study>, or <results>/<study>); 1 if any differs.
    engine: the rerun ran on another engine (ENGINE_TOLERANCES). CompareError, before anything is
    printed, when a study has no results or `against` is not there."""
    root = Path(results or DATA)
    for study in studies:
        if not any((root / study / n).is_file() for n in TABLES):
            raise _missing_results(study, root / study)
    _reader(against, studies[0] if studies else "")  # `against` must be a directory or a revision
    failed = 0
    for study in studies:
        for level, what, msg in compare_study(study, against, root / study, engine=engine):
            print(f"{level:<8} {what}: {msg}")
            failed += level == "differs"
    print(f"compare-results against {against}: " + ("MATCH" if not failed else f"{failed} difference(s)")
          + (f" (cross-engine tolerances {ENGINE_TOLERANCES})" if engine else f" (tolerances {TOLERANCES})"))
    return 1 if failed else 0
