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
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SilentzoneError
from ..paths import DATA, FIGURES, REPO

TOLERANCES = {"fidelity_rel": 1e-4, "margin_abs": 1e-3, "kld_rel": 1e-4, "stats_abs": 1e-6}
QUANT_COLS = ("status", "method", "requested_type", "bpw", "bytes")
TABLES = ("quants.csv", "fidelity.csv", "samples.csv", "stats.json")


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
                  figures_against: Path | None = None) -> list[tuple[str, str, str]]:
    """Rows (level, what, message): level 'ok', 'differs' (fails) or 'note' (reported only).
    figures: the regenerated figures/<study> (default the repository's); figures_against: the
    other copy's, when `against` is a directory (a git revision holds its own).
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


def _same(x, y, tol: float = 0.0) -> bool:
    if isinstance(x, (int, float, np.number)) and isinstance(y, (int, float, np.number)) \
            and not isinstance(x, bool):
        if math.isnan(float(x)) and math.isnan(float(y)):
            return True
        return abs(float(x) - float(y)) <= tol * max(1.0, abs(float(y))) if tol else float(x) == float(y)
    return (x is None and y is None) or str(x) == str(y)


def main(studies, against: str, results: Path | None = None) -> int:
    """Print the comparison of every study (data/<study>, or <results>/<study>); 1 if any differs.
    CompareError, before anything is printed, when a study has no results or `against` is not there."""
    root = Path(results or DATA)
    for study in studies:
        if not any((root / study / n).is_file() for n in TABLES):
            raise _missing_results(study, root / study)
    _reader(against, studies[0] if studies else "")  # `against` must be a directory or a revision
    failed = 0
    for study in studies:
        for level, what, msg in compare_study(study, against, root / study):
            print(f"{level:<8} {what}: {msg}")
            failed += level == "differs"
    print(f"compare-results against {against}: " + ("MATCH" if not failed else f"{failed} difference(s)")
          + f" (tolerances {TOLERANCES})")
    return 1 if failed else 0
