"""Numbers in prose come from code: the README's results blocks, generated from the shipped results.

    silentzone numbers            # rewrite the generated blocks of README.md and the generated FILES
    silentzone numbers --check    # exit 1 (naming the blocks) when README.md differs from what it would write

A generated block sits between two marker lines and is replaced whole:

    <!-- numbers:results-table -->
    ...
    <!-- /numbers:results-table -->

BLOCKS maps each block name to the function that writes it from data/<study>/ (stats.json, the
analysis tables, quants.csv, fidelity.csv, reference_accuracy.csv). Only the paper's own numbers
(PAPER_COLUMNS, from its abstract as given in the project's docs/paper.md) are constants here, and they are
labelled as the paper's wherever they appear. tests/test_numbers.py fails when README.md is stale.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from ..paths import DATA, REPO
from ..errors import SilentzoneError

STUDIES = ("smollm2", "gemma3")
NAMES = {"smollm2": "SmolLM2-135M-Instruct", "gemma3": "Gemma 3 270M"}
TASK_NAMES = {"sciq": "SciQ", "arc_easy": "ARC-Easy", "piqa": "PIQA", "lambada": "LAMBADA (last word)",
              "hellaswag": "HellaSwag"}
# The paper's numbers (its abstract): labelled as the paper's, never presented as ours.
PAPER_COLUMNS = {
    "Qwen3.6-35B-A3B (paper)": {"quants": "28", "full": "-0.72, p<0.001", "zone": "+0.00 (n.s.)",
                                "vol": "+0.94, p<0.001",
                                "gm": "1.08 to 1.22 (failed / passed, LiveCodeBench, 5 models)",
                                "route": "42.3% to 49.4%"},
    "Devstral-Small-2-24B (paper)": {"quants": "41", "full": "-0.86, p<0.001", "zone": "-0.24, p=0.36",
                                     "vol": "+0.55, p=0.03", "gm": "", "route": ""},
}
README = REPO / "README.md"


class NumbersError(SilentzoneError, ValueError):
    """A results file the README needs is missing or a README block is malformed (one line)."""


# ------------------------------------------------------------------------------------------ formatting

def r2(v) -> str:
    """A correlation as signed text with two decimals ('n/a' when undefined)."""
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):+.2f}"


def pval(p) -> str:
    """'p<0.001' or 'p=0.36' (two significant digits)."""
    if p is None or not math.isfinite(float(p)):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={float(p):.2g}"


def pct(v, digits: int = 0) -> str:
    """A share as a percentage."""
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.{digits}f}%"


def ci(lo, hi) -> str:
    return f"[{r2(lo)}, {r2(hi)}]"


def items(n) -> str:
    """Items per task needed for 80% power: the grid value, or 'more than 10,000' when none reached it."""
    return "more than 10,000" if n is None else f"{int(n):,}"


# ------------------------------------------------------------------------------------------- inputs

def _read(study: str, data: Path) -> dict:
    """Everything a block needs of one study: stats.json and the tables (one-line error if missing)."""
    d = Path(data) / study
    need = ("stats.json", "cohort.csv", "drop_prediction.csv", "routing.csv", "quants.csv", "fidelity.csv",
            "reference_accuracy.csv")
    for name in need:
        if not (d / name).is_file():
            raise NumbersError(f"{d / name}: file not found (run the analysis notebooks 04-06 first)")
    out = {"stats": json.loads((d / "stats.json").read_text())}
    for name in need[1:]:
        out[name.removesuffix(".csv")] = pd.read_csv(d / name, keep_default_na=False, na_values=[""])
    return out


def _gm_range(drop: pd.DataFrame) -> str:
    """Range and median over quants of the pooled drop/kept GM KLD ratio."""
    g = drop[(drop["task"] == "all")]["gm_ratio"].astype(float)
    g = g[g.map(math.isfinite)]
    if g.empty:
        return "n/a (no drops)"
    return f"{g.min():.2f} to {g.max():.2f} (median {g.median():.2f}, {len(g)} quants)"


def _distinct(s: dict, v: dict) -> str:
    """The cohort with each model counted once (stats.json identical_quants and the *_distinct keys)."""
    if not s["identical_quants"]:
        return "no two quants are one model"
    return (f"{'; '.join(s['identical_quants'])}: {r2(s['rho_full_distinct'])}, {pval(s['p_full_distinct'])} "
            f"(n={s['n_distinct']}) / {r2(s['rho_zone_distinct'])}, {pval(s['p_zone_distinct'])} "
            f"(n={s['n_zone_distinct']})")


def _route_range(route: pd.DataFrame) -> str:
    """Routing accuracy range over the pairs that have disagreements, with their count."""
    pairs = route[(route["task"] == "all") & (route["n_models"] == 2)]
    has = pairs[pairs["n_disagree"] > 0]
    if has.empty:
        return f"n/a (none of {len(pairs)} pairs disagree)"
    acc = has["route_acc"].astype(float)
    return (f"{pct(acc.min())} to {pct(acc.max())} ({len(has)} of {len(pairs)} pairs disagree, median "
            f"{int(has['n_disagree'].median())} prompts)")


# ------------------------------------------------------------------------------------------- blocks

def _read_power(d: Path) -> dict:
    """What the headline table needs of a powered profile's results (data/<study>-power/, make power)."""
    out = {"stats": json.loads((d / "stats.json").read_text())}
    for name in ("drop_prediction", "routing"):
        out[name] = pd.read_csv(d / f"{name}.csv", keep_default_na=False, na_values=[""])
    return out


def result_columns(data: Path = DATA) -> dict[str, dict]:
    """{column label: what _read gives} of the small-model replications, in the headline's order: each
    study's default, then its powered profile once the leases hold its whole cohort (_power_complete)."""
    cols = {}
    for s in STUDIES:
        cols[f"{NAMES[s]} (ours, small-model replication)"] = _read(s, data)
        p = Path(data) / f"{s}-power"
        if _power_complete(p):
            v = _read_power(p)
            n = v["stats"]["n_items_per_task"]
            cols[f"{NAMES[s]}, powered profile: {min(n.values()):,} to {max(n.values()):,} items per task "
                 "(ours, small-model replication)"] = v
    return cols


def results_table(data: Path = DATA) -> str:
    """The headline table: the paper's columns (labelled) beside the small-model replications (each
    study's default and, once complete, its powered profile)."""
    ours = result_columns(data)
    cols = list(PAPER_COLUMNS) + list(ours)
    rows = []

    def row(label: str, paper_key: str | None, fn) -> None:
        cells = [PAPER_COLUMNS[c].get(paper_key, "") if paper_key else "" for c in PAPER_COLUMNS]
        cells += [fn(v["stats"], v) for v in ours.values()]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row("quants in the cohort", "quants", lambda s, v: f"{s['n_quants']} ok ({s['n_zone']} in the zone)")
    row("rho(KLD, score), full cohort", "full",
        lambda s, v: f"{r2(s['rho_full'])} {ci(*s['rho_full_ci'])}, {pval(s['p_full'])}")
    row("same, inside the silent zone (zone from all items)", "zone",
        lambda s, v: f"{r2(s['rho_zone'])}, {pval(s['p_zone'])} (n={s['n_zone']}); quants CI "
                     f"{ci(*s['rho_zone_ci'])}, items CI {ci(s['rho_zone_items_lo'], s['rho_zone_items_hi'])}")
    row("one model under two ids, counted once: rho full / zone", None, _distinct)
    row("zone rho, held-out zone boundaries (primary)", None,
        lambda s, v: f"{r2(s['rho_zone_heldout'])} (95% of {s['n_splits_heldout']} splits: "
                     f"{r2(s['rho_zone_heldout_lo'])} to {r2(s['rho_zone_heldout_hi'])})")
    row("noise ceiling: zone rho of a perfect metric here (conservative / optimistic)", None,
        lambda s, v: f"{r2(s['ceiling_conservative_rho_median'])} / {r2(s['ceiling_optimistic_rho_median'])}, "
                     f"power {pct(s['ceiling_conservative_power'])} / {pct(s['ceiling_optimistic_power'])}")
    row("items per task for 80% power (conservative / optimistic)", None,
        lambda s, v: f"{items(s['items_for_power_conservative'])} / {items(s['items_for_power_optimistic'])} "
                     f"(now {min(s['n_items_per_task'].values())})")
    row("rho(KLD, disagreement volume), zone", "vol",
        lambda s, v: f"{r2(s['rho_vol_zone'])} {ci(*s['rho_vol_zone_ci'])}, {pval(s['p_vol_zone'])}")
    row("per-prompt GM KLD ratio, drops / kept (reference-correct items)", "gm",
        lambda s, v: _gm_range(v["drop_prediction"]))
    row("KLD routing accuracy on disagreements (pairs of the 6 lowest-KLD quants)", "route",
        lambda s, v: _route_range(v["routing"]))
    head = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    return "\n".join(head + rows)


def study_notes(data: Path = DATA) -> str:
    """One paragraph per study: what the numbers are computed on (variant, zone, items, tokens)."""
    out = []
    for study in STUDIES:
        v = _read(study, data)
        s, f = v["stats"], v["fidelity"]
        tok = f[(f["corpus"] == s["corpus"]) & (f["ctx"] == int(s["ctx"])) & (f["metric"] == s["metric"])]
        ntok = sorted(set(tok["n_tokens"].astype(int)))
        tasks = ", ".join(TASK_NAMES.get(t, t) for t in s["n_items_per_task"])
        n_items = sum(s["n_items_per_task"].values())
        out.append(
            f"**{NAMES[study]}** ({s['label']}): tasks {tasks} "
            f"({', '.join(str(n) for n in sorted(set(s['n_items_per_task'].values())))} items each, "
            f"{n_items} per model); primary variant {s['metric']} on `{s['corpus']}` at ctx {s['ctx']} "
            f"({'/'.join(str(n) for n in ntok)} scored tokens per quant); zone: {s['zone_definition']}; "
            f"reference composite score {s['ref_score']:.3f}; {s['n_resamples']:,} bootstrap resamples (quants "
            f"and items); noise ceiling from {s['ceiling_sims']:,} simulations ({s['ceiling_coupling']} "
            f"coupling). Zone size under item resampling: median {s['n_zone_items_median']:.0f} "
            f"(95%: {s['n_zone_items_lo']:.0f} to {s['n_zone_items_hi']:.0f}); the in-sample zone rho on the "
            f"same halves as the hold-out: median {r2(s['rho_zone_insample'])}.")
    return "\n\n".join(out)


def cohort_tables(data: Path = DATA) -> str:
    """Per study: quants per method, how many are ok, bits per weight range, wall seconds; failed quants."""
    out = []
    for study in STUDIES:
        q = _read(study, data)["quants"]
        out.append(f"Cohort of {NAMES[study]} (default profile; wall seconds to make the artifacts, load-time "
                   "quants are made when loaded):\n")
        out += ["| method | quants | ok | bits per weight | wall s |", "|---|---|---|---|---|"]
        for method, g in q.groupby("method", sort=True):
            ok = g[g["status"] == "ok"]
            bpw = ok["bpw"].astype(float)
            out.append(f"| {method} | {len(g)} | {len(ok)} | {bpw.min():.2f}-{bpw.max():.2f} | "
                       f"{ok['wall_s'].astype(float).sum():.0f} |")
        failed = q[q["status"] != "ok"]
        if len(failed):
            out.append("")
            out.append("Failed (by design): " + "; ".join(
                f"`{r.quant_id}`: {str(r.reason).split('|')[0].strip()}" for r in failed.itertuples()))
        out.append("")
    return "\n".join(out).rstrip()


def accuracy_table(data: Path = DATA) -> str:
    """Reference accuracy on the default suites with Wilson intervals (reference_accuracy.csv)."""
    acc = {s: _read(s, data)["reference_accuracy"].set_index("task") for s in STUDIES}
    tasks = list(dict.fromkeys(t for s in STUDIES for t in acc[s].index))
    out = ["| task | chance | " + " | ".join(f"{NAMES[s]} acc [95% CI] | acc_norm" for s in STUDIES) + " |",
           "|---|---|" + "---|---|" * len(STUDIES)]
    for t in tasks:
        chance = next(float(acc[s].loc[t, "chance"]) for s in STUDIES if t in acc[s].index)
        cells = []
        for s in STUDIES:
            if t not in acc[s].index:
                cells += ["not in its default suite", ""]
                continue
            r = acc[s].loc[t]
            cells += [f"{100 * r['acc']:.1f}% [{100 * r['acc_ci_low']:.1f}, {100 * r['acc_ci_high']:.1f}]",
                      f"{100 * r['acc_norm']:.1f}%"]
        out.append(f"| {TASK_NAMES.get(t, t)} | {100 * chance:.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _verdict(s: dict) -> str:
    """How well this study's zone test could see a perfect metric (from its noise-ceiling power)."""
    hi = max(s["ceiling_conservative_power"], s["ceiling_optimistic_power"])
    if hi < 0.5:
        return "cannot tell 'KLD fails in the zone' from 'the benchmark cannot see inside the zone'"
    if hi < 0.8:
        lo = min(s["ceiling_conservative_power"], s["ceiling_optimistic_power"])
        return (f"would detect a perfect metric in {pct(lo)} to {pct(hi)} of studies, short of the 80% a decisive "
                "test needs, so a null result is weak evidence")
    return "would detect a perfect metric in most studies"


def _against_ceiling(s: dict) -> str:
    """Where the observed zone rho lies against the central intervals of a perfect metric's zone rho
    (the noise ceiling's simulated studies, both truths)."""
    r = s["rho_zone"]
    above = {t: r > s[f"ceiling_{t}_rho_hi"] for t in ("conservative", "optimistic")}
    below = {t: r < s[f"ceiling_{t}_rho_lo"] for t in ("conservative", "optimistic")}
    if any(below.values()):
        return "the observed rho is stronger than a perfect metric's under at least one truth (check the truth models)"
    if all(above.values()):
        return "the observed rho is weaker than a perfect metric would show under both truths, so KLD ranks the zone less well than a perfect metric"
    if above["conservative"]:
        return ("the observed rho lies above the conservative interval but inside the optimistic one, so KLD ranks "
                "the zone less well than a perfect metric would if the true scores follow the cohort-wide trend, "
                "and these items cannot exclude a perfect ranking if they spread as observed")
    if above["optimistic"]:
        return ("the observed rho lies above the optimistic interval but inside the conservative one, weaker than a "
                "perfect metric under one truth only")
    return "the observed rho is within what a perfect metric would show under both truths"


def _power_reading(data: Path, study: str) -> str:
    """The reading of a finished powered profile (data/<study>-power/), every number from its stats.json
    and leases.json; empty while its leases have not finished the cohort."""
    d = Path(data) / f"{study}-power"
    info = _leases(d)
    if info is None or info["left_out"]:
        return ""
    p = json.loads((d / "stats.json").read_text())
    ref = info.get("reference")
    n = p["n_items_per_task"]
    level = "central 95%"
    text = (f"{NAMES[study]}'s powered profile (the whole cohort, {p['n_quants']} quants, {min(n.values()):,} to "
            f"{max(n.values()):,} items per task" + (", the reference's answers from a float run" if ref else "")
            + f"): full-cohort rho {r2(p['rho_full'])}; {p['n_zone']} quants in the zone, zone rho "
            f"{r2(p['rho_zone'])} ({pval(p['p_zone'])}; items CI {ci(p['rho_zone_items_lo'], p['rho_zone_items_hi'])}), "
            f"held out {r2(p['rho_zone_heldout'])}, and {r2(p['rho_vol_zone'])} with the disagreement volume. A "
            f"perfect metric would show {r2(p['ceiling_conservative_rho_median'])} ({level} of simulated studies "
            f"{ci(p['ceiling_conservative_rho_lo'], p['ceiling_conservative_rho_hi'])}) under the conservative truth "
            f"and {r2(p['ceiling_optimistic_rho_median'])} ({ci(p['ceiling_optimistic_rho_lo'], p['ceiling_optimistic_rho_hi'])}) "
            f"under the optimistic one, with power {pct(p['ceiling_conservative_power'])} and "
            f"{pct(p['ceiling_optimistic_power'])}: {_against_ceiling(p)}.")
    sp = p.get("ceiling_splits")
    if sp:
        text += (f" With every item of the shipped splits the conservative power would be "
                 f"{pct(sp['conservative_power'])} (optimistic {pct(sp['optimistic_power'])}).")
    return text


def reading(data: Path = DATA) -> str:
    """The paragraph that reads both results, every number from stats.json."""
    s = _read("smollm2", data)["stats"]
    g = _read("gemma3", data)["stats"]
    n = min(s["n_items_per_task"].values())
    return (
        f"Over the whole SmolLM2 cohort KLD ranks quants (rho {r2(s['rho_full'])}); inside the pre-specified zone "
        f"({s['zone_definition']}, {s['n_zone']} of {s['n_quants']} quants) the in-sample rho is "
        f"{r2(s['rho_zone'])} ({pval(s['p_zone'])}), and with zone boundaries chosen on held-out items "
        f"{r2(s['rho_zone_heldout'])}, while KLD still tracks how much the answers move (rho "
        f"{r2(s['rho_vol_zone'])} with the disagreement volume). At {n} items per task a metric that ranked "
        f"true quality perfectly would show a zone rho of {r2(s['ceiling_conservative_rho_median'])} "
        f"(conservative truth) to {r2(s['ceiling_optimistic_rho_median'])} (optimistic), significant in "
        f"{pct(s['ceiling_conservative_power'])} to {pct(s['ceiling_optimistic_power'])} of simulated studies, "
        f"so this zone test {_verdict(s)}; the item-resampling CI of the zone rho, "
        f"{ci(s['rho_zone_items_lo'], s['rho_zone_items_hi'])}, spans both readings. Gemma 3 "
        f"({g['n_zone']} of {g['n_quants']} quants in the zone): zone rho {r2(g['rho_zone'])} "
        f"({pval(g['p_zone'])}), held out {r2(g['rho_zone_heldout'])}, against a ceiling of "
        f"{r2(g['ceiling_conservative_rho_median'])} to {r2(g['ceiling_optimistic_rho_median'])} (power "
        f"{pct(g['ceiling_conservative_power'])} to {pct(g['ceiling_optimistic_power'])}): its zone test "
        f"{_verdict(g)}. A perfect metric reaches 80% power at about "
        f"{items(s['items_for_power_conservative'])} (SmolLM2) and {items(g['items_for_power_conservative'])} "
        f"(Gemma 3) items per task under the conservative truth; at {n} items per task the default profile cannot "
        f"support or refute the paper's central claim." + "".join(
            " " + t for t in (_power_reading(data, st) for st in STUDIES) if t))


def variants_page(data: Path = DATA) -> str:
    """docs/variants.md: the consolidated variants table of both studies from robustness.csv (every
    corpus x context x metric: full-cohort and zone rho with their Fisher-z CIs and Holm-adjusted p, the
    held-out zone rho over the same splits for every variant)."""
    out = ["# Every fidelity variant, full cohort vs silent zone", "",
           "Generated by `make numbers` (`silentzone/report/numbers.py`) from `data/<study>/robustness.csv`;",
           "do not edit by hand. Small-model replications on the embedded models, not the paper's numbers.",
           "rho is Spearman rho(metric, composite score); CIs are Fisher-z with the Bonett-Wright SE;",
           "p_holm adjusts over all variants of a study, each scope its own family; the held-out zone rho",
           "decides the zone on one half of the items and correlates on the other (median and central 95% over",
           "the same splits for every variant). top1_agreement is higher-is-better, so its rho has the",
           "opposite sign.", ""]
    for study in STUDIES:
        d = Path(data) / study / "robustness.csv"
        if not d.is_file():
            raise NumbersError(f"{d}: file not found (run the analysis notebooks 04-06 first)")
        rob = pd.read_csv(d)
        stats = _read(study, data)["stats"]
        held = "rho_heldout" in rob
        out += [f"## {NAMES[study]} ({len(rob)} variants; zone: {stats['zone_definition']})", "",
                "| corpus | ctx | metric | full rho [95% CI] | p_holm | zone rho [95% CI] (n) | p_holm |"
                + (" held-out zone rho [95% of splits] |" if held else ""),
                "|---|---|---|---|---|---|---|" + ("---|" if held else "")]
        for r in rob.sort_values(["corpus", "ctx", "metric"]).itertuples(index=False):
            cells = [str(r.corpus), str(r.ctx), f"`{r.metric}`",
                     f"{r2(r.rho_full)} {ci(r.fz_lo_full, r.fz_hi_full)}", pval(r.p_holm_full).removeprefix("p="),
                     f"{r2(r.rho_zone)} {ci(r.fz_lo_zone, r.fz_hi_zone)} ({int(r.n_zone)})",
                     pval(r.p_holm_zone).removeprefix("p=")]
            if held:
                cells.append(f"{r2(r.rho_heldout)} {ci(r.rho_heldout_lo, r.rho_heldout_hi)}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def power_page(data: Path = DATA) -> str:
    """docs/power.md: the powered profile's task selection (data/<study>/task_selection.csv: the rule,
    the reference's accuracy on the held-back items, the outcome, the items left for the study) and
    what the shipped default study predicts about its power."""
    from ..config import load_study
    out = ["# The powered profile: which tasks, how many items", "",
           "Generated by `make numbers` (`silentzone/report/numbers.py`) from `data/<study>/task_selection.csv`,",
           "`data/<study>/task_selection_bfcl.csv` and `data/<study>/stats.json`; do not edit by hand. Small-model",
           "replications on the embedded models.",
           ""]
    for study in STUDIES:
        d = Path(data) / study / "task_selection.csv"
        if not d.is_file():
            raise NumbersError(f"{d}: file not found (run `silentzone bench-select --study {study}`)")
        table = pd.read_csv(d)
        prov = json.loads(d.with_name(d.name + ".provenance.json").read_text())
        stats = _read(study, data)["stats"]
        prof = load_study(study, "power")
        chosen = list(table.loc[table["selected"], "task"])
        out += [f"## {NAMES[study]}", "",
                f"Rule, fixed before any quant of this profile ran: {prov['rule']}. The reference ran with its KV cache in "
                f"{prov['reference_kv_cache'].upper()}. {_held_back_sentence(table, prov)}", "",
                "| task | kind | chance | held-back items | reference correct | accuracy [Wilson 95%] | selected "
                "| items for the study |", "|---|---|---|---|---|---|---|---|"]
        for r in table.itertuples(index=False):
            n_used = min(int(r.n_study), prof.profile.n_items) if r.selected else 0
            chance = f"{pct(r.chance, 1)} (no-call floor)" if r.task == "bfcl" else pct(r.chance)
            out.append(f"| {r.task} | {r.kind} | {chance} | {int(r.n)} | {int(r.correct)} | "
                       f"{pct(r.acc, 1)} [{pct(r.acc_ci_low, 1)}, {pct(r.acc_ci_high, 1)}] | "
                       f"{'yes' if r.selected else 'no'} | {n_used:,} |")
        used = [min(int(n), prof.profile.n_items) for n, s in zip(table["n_study"], table["selected"]) if s]
        need = stats.get("items_for_power_conservative")
        out += ["", f"Selected: {', '.join(chosen) or 'none'} ({len(chosen)} tasks, {sum(used):,} items per model; "
                f"the shipped default scores {len(stats['n_items_per_task'])} tasks x "
                f"{min(stats['n_items_per_task'].values())} items). The default study's noise ceiling puts 80% "
                f"power for a perfect metric (conservative truth) at about {items(need)} items per task over "
                f"its own tasks; the powered profile has {min(used) if used else 0:,} to "
                f"{max(used) if used else 0:,} per selected task. That is a prediction from the default "
                + ("cohort; the profile's own noise ceiling, from its whole cohort, is in its results below."
                   if _power_complete(Path(data) / f"{study}-power") else
                   "cohort, not a result: the powered profile has not been run in full yet (the GPU runs so far: "
                   "docs/performance.md)."), ""]
        out += _cpu_hours(study, Path(data).parent / "perf" / "cpu" / f"cpu_hours-{study}.json")
        out += _generation_families(study, table, Path(data))
        out += _interim(study, Path(data) / f"{study}-power")
    return "\n".join(out)


def _leases(d: Path) -> dict | None:
    """leases.json of the leases gathered into `d` (data/<study>-power/, make power), or None."""
    f = d / "leases.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _power_complete(d: Path) -> bool:
    """Whether the leases gathered into `d` (data/<study>-power/) hold the profile's whole cohort."""
    info = _leases(d)
    return info is not None and not info["left_out"]


def routing_disagreements(route: pd.DataFrame) -> pd.Series:
    """Items on which the two quants of each routed pair answer differently, summed over the tasks
    (routing.csv's per-task rows; its 'all' rows repeat them), one value per pair."""
    pairs = route[(route["n_models"] == 2) & (route["task"] != "all")]
    return pairs.groupby("models")["n_disagree"].sum()


def _interim(study: str, d: Path) -> list[str]:
    """docs/power.md's interim results of the powered profile: data/<study>-power/ (`make power`, from
    the GPU leases' packed results), while the leases have not finished the cohort."""
    info = _leases(d)
    if info is None:
        return []
    s = json.loads((d / "stats.json").read_text())
    route = pd.read_csv(d / "routing.csv")
    dis = routing_disagreements(route)
    dis0 = routing_disagreements(pd.read_csv(d.parent / study / "routing.csv"))  # the shipped default
    d0 = json.loads((d.parent / study / "stats.json").read_text())["n_items_per_task"]
    at0 = f"at {min(d0.values())} items per task (the shipped default) the routed pairs disagreed on a median of {dis0.median():g}"
    n_items = s["n_items_per_task"]
    by_reason = {}
    for q, why in sorted(info["left_out"].items()):
        by_reason.setdefault(why, []).append(q)
    n_in = len(info["gathered"]) + len(info["failed"])
    whole = not info["left_out"]
    cohort = (f"all {n_in} quants of the profile" if whole else
              f"{len(info['gathered'])} of the profile's {info['n_quants_profile']} quants")
    return [
        f"### {'Results' if whole else 'Interim results'}: {cohort} (`data/{study}-power/`)", "",
        f"`make power` gathers the leases' packed results ({len(info['leases'])} leases, "
        f"`docs/performance/gpu/*-power-{study}-*results*.tar.xz`; `silentzone gather-leases`, which refuses "
        "quant files or tables that differ between leases) and runs the analysis notebooks on them. "
        f"In: {', '.join(info['gathered'])}" + (f", and {', '.join(info['failed'])} (quantization failed)"
                                               if info["failed"] else "") + ". "
        + ("" if whole else f"Not yet ({len(info['left_out'])}): "
           + "; ".join(f"{', '.join(qs)} ({why})" for why, qs in sorted(by_reason.items())) + ". ")
        + _engines(d, info["gathered"], info.get("bench_devices", {}), info.get("reference"))
        + ("" if whole else
           "An interim cohort: the zone below is not the full study's, and nothing here is the headline."), "",
        "| | value |", "|---|---|",
        f"| items per model | {sum(n_items.values()):,} ({', '.join(f'{t} {n:,}' for t, n in n_items.items())}) |",
        f"| reference composite score | {pct(s['ref_score'], 1)} |",
        f"| rho full cohort ({s['n_full_rho']} quants, {s['metric']}, {s['corpus']} ctx {s['ctx']}) | "
        f"{r2(s['rho_full'])} {ci(*s['rho_full_ci'])}, {pval(s['p_full'])} |",
        f"| quants in the zone ({s['zone_definition']}) | {s['n_zone']} |",
        f"| rho in the zone | {r2(s['rho_zone'])} {ci(*s['rho_zone_ci'])} |",
        f"| one model under two ids, counted once: rho full / zone | {_distinct(s, None)} |",
        f"| items per task for 80% power of a perfect metric in this zone (conservative / optimistic) | "
        f"{items(s['items_for_power_conservative'])} / {items(s['items_for_power_optimistic'])} (this profile "
        f"scores {min(n_items.values()):,} to {max(n_items.values()):,}) |",
        f"| noise ceiling: power of a perfect metric in this zone (conservative / optimistic) | "
        f"{pct(s['ceiling_conservative_power'])} / {pct(s['ceiling_optimistic_power'])} |",
        *_splits_row(s),
        f"| routed pairs: items the two quants answer differently (median, min-max over {len(dis)} pairs) | "
        f"{dis.median():g} ({dis.min()}-{dis.max()}) |",
        "",
        (f"The zone holds {s['n_zone']} quants, too few to test a rank correlation in it. " if s["n_zone"] < 5 else "")
        + f"Routing: {at0}, here on {dis.median():g}.",
        ""]


def _splits_row(s: dict) -> list[str]:
    """The power-section row of stats.json's `ceiling_splits` (the noise ceiling with every item of the
    shipped splits), when the profile has it."""
    c = s.get("ceiling_splits")
    if not c:
        return []
    items = ", ".join(f"{t} {n:,}" for t, n in c["items_per_task"].items())
    return [f"| noise ceiling with every item of the shipped splits ({items}; the same simulation) | "
            f"{pct(c['conservative_power'])} / {pct(c['optimistic_power'])} |"]


def _float_reference(ref: dict) -> str:
    """leases.json's `reference` block (gather-leases --reference) in a sentence: where the reference's
    answers come from and how the leases' CUDA reference differs from them."""
    vs = ref["vs_leases"]
    n = sum(v["answers_differ"] for v in vs.values())
    items = sum(v["items"] for v in vs.values())
    where = "; ".join(f"{t} {', '.join(v['item_ids'])}" for t, v in vs.items() if v["answers_differ"])
    top = max(v["margin_abs_diff_max"] for v in vs.values())
    return (f"The reference's answers are a float run: llama.cpp's CPU build with an F32 KV cache "
            f"(`{ref['file']}`, `gather-leases --reference`). The leases' CUDA reference, against which "
            f"the quants' per-prompt KLD columns were taken, computes F32 products in TF32 "
            f"(docs/performance.md): it answers {n} of {items:,} items otherwise"
            + (f" ({where})" if n else "") + f", and its margins differ by up to {top:.2g} nats. ")


def _engines(d: Path, gathered: list[str], devices: dict | None = None, reference: dict | None = None) -> str:
    """Which engine ran which part of a gathered cohort, from quants.csv's methods: the reference's bench
    (a float run on a CPU when leases.json's `reference` names one, else llama.cpp's CUDA build) and the
    GGUF quants on llama.cpp's CUDA build, every other method's quants through transformers on CUDA;
    then the quants' bench tables that leases.json's bench_devices puts on a CPU, by model."""
    q = pd.read_csv(d / "quants.csv")
    methods = q.set_index("quant_id").loc[gathered, "method"]
    on_cpu: dict[str, list[str]] = {}
    for pair in (devices or {}).get("cpu", []):
        model, task = pair.split("/")
        if model == "reference" and reference:
            continue  # said by _float_reference
        on_cpu.setdefault(model, []).append(task)
    cpu = ""
    if on_cpu:
        def part(ms):
            return "; ".join(f"{m} ({', '.join(on_cpu[m])})" for m in ms)
        llama = [m for m in on_cpu if m == "reference" or methods.get(m) == "gguf"]
        hf = [m for m in on_cpu if m not in llama]
        cpu = (f"Scored on a CPU instead ({sum(map(len, on_cpu.values()))} bench tables, where the GPU leases "
               "ran out; their provenance says so): "
               + "; ".join(([f"on llama.cpp's CPU build {part(llama)}"] if llama else [])
                           + ([f"through transformers on the CPU {part(hf)}"] if hf else [])) + ". ")
    n_gguf = int((methods == "gguf").sum())
    other = methods[methods != "gguf"]
    if reference:
        text = (_float_reference(reference)
                + f"The {n_gguf} GGUF quants ran on llama.cpp's CUDA build (what users deploy)")
    else:
        text = (f"The reference and the {n_gguf} GGUF quants ran on llama.cpp's CUDA build (its F32 products are "
                "TF32: the reference is not quite float, docs/performance.md)")
    if other.empty:
        return text + " (one engine for the whole cohort). " + cpu
    names = ", ".join(dict.fromkeys(other))
    return (text + f"; the {len(other)} quants of the other methods ({names}) through transformers on CUDA "
            "(two engines in one cohort; on the GPU every quant's fidelity is scored against reference logits "
            "captured through transformers, silentzone/backends reference_source). " + cpu)


def _cpu_hours(study: str, path: Path) -> list[str]:
    """The profile's bench in CPU-core hours, estimated from measured per-item rates
    (perf/cpu_hours.py); nothing when it was not measured."""
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    per, n, q = r["per_item_s"], r["items"], r["quants"]
    lo = min(v for role in per.values() for v in role.values())
    hi = max(v for role in per.values() for v in role.values())
    hours = sum(n[t] * (per["reference"][t] + q["gguf"] * per["gguf"][t] + q["other"] * per["hf"][t])
                for t in n) / 3600
    m = r["measured_on"]
    return [f"**On a CPU** (an estimate from measured rates, not a full run; `perf/cpu_hours.py`, "
            f"{r['header']['date'][:10]}): the bench of this profile takes about **{hours:.1f} core-hours** "
            f"({sum(n.values()):,} items x (the reference + {q['gguf']} GGUF + {q['other']} other quants)), at "
            f"{lo:.2f}-{hi:.2f} s per item on one thread ({r['header']['cpu']}; {m['items_per_task']} items "
            f"per task timed for the reference, {m['gguf']} and {m['hf']}). The quants run one job each, so C "
            f"cores take about 1/C of it; the quants and fidelity stages come on top.", ""]


def _held_back_sentence(table: pd.DataFrame, prov: dict) -> str:
    """Which held-back items each row's counts come from (task_selection.csv's held_back column: "last"
    or "random:<seed>"; the provenance's held_back describes each way)."""
    col = table["held_back"] if "held_back" in table else pd.Series("last", index=table.index)
    ways = prov.get("held_back") or {"last": f"the last {int(table['n'].iloc[0])} of the task's source order"}
    parts = []
    for value in dict.fromkeys(col):
        tasks = list(table.loc[col == value, "task"])
        kind = value.split(":")[0]
        parts.append(f"{', '.join(tasks)}: {ways[kind]}")
    note = ""
    if set(col) != {"last"}:
        note = (" The first rule took the last items of every task, but a source ordered by sub-domain puts "
                "only one sub-domain there (HellaSwag's last items are all WikiHow, its first ActivityNet), so the "
                "likelihood tasks were rerun on the seeded sample.")
        if (col == "last").any():
            note += (" Rows still marked `last` were not rerun (a generation family costs hours of greedy "
                     "decoding on 2 cores).")
    return f"Held-back items: {'; '.join(parts)}.{note}"


def _generation_families(study: str, table: pd.DataFrame, data: Path) -> list[str]:
    """power_page's paragraphs on the paper's generation families: tool calling put through the
    rule (data/<study>/task_selection_bfcl.csv per category), LiveCodeBench not measured."""
    row = table[table["task"] == "bfcl"]
    if row.empty:
        raise NumbersError(f"{data / study / 'task_selection.csv'}: no bfcl row "
                           f"(run `silentzone bench-select --study {study} --tasks bfcl`)")
    r = row.iloc[0]
    path = data / study / "task_selection_bfcl.csv"
    cats = pd.read_csv(path).set_index("category")
    prov = json.loads(path.with_name(path.name + ".provenance.json").read_text())
    irr, every = prov["bfcl_irrelevance_items"], prov["bfcl_items"]
    held_irr = int(cats.loc["irrelevance", "n"]) if "irrelevance" in cats.index else 0
    where = "below" if r.acc_ci_high < r.chance else "at"
    calls = cats.drop(index=["irrelevance", "all"], errors="ignore")
    none_right = (int(calls["correct"].sum()) == 0 and held_irr and
                  int(cats.loc["irrelevance", "correct"]) == held_irr)
    none_right = (" It got no item that needs a call right and every irrelevance item (it did not call): "
                  "its score is these items' no-call floor exactly." if none_right else "")
    verdict = (f"above the floor: **bfcl enters the embedded composite** (`power` lists it)" if r.selected else
               f"**bfcl: {where} floor, not added** (the lower end of the interval is not above the floor; "
               f"the `power` profile's tasks stay as they are)")
    out = [f"**Tool calling** (`bfcl`: BFCL v4's five single-turn categories interleaved; greedy decoding, "
           f"at most {prov['max_new_tokens']} new tokens). Its chance level is the no-call floor, the score of a model "
           f"that never calls a function: right on the irrelevance items alone, {irr:,} of {every:,} "
           f"({pct(r.chance, 1)}); on these {int(r.n)} held-back items the floor is {held_irr} of {int(r.n)} "
           f"({pct(held_irr / int(r.n), 1)}), and the rule compares with the pre-specified {pct(r.chance, 1)}. "
           f"The reference answers {int(r.correct)} of {int(r.n)}: {pct(r.acc, 1)} [{pct(r.acc_ci_low, 1)}, "
           f"{pct(r.acc_ci_high, 1)}] (Wilson 95%), {verdict}.{none_right} Per category (descriptive; the rule "
           f"reads the mixed task only):", "",
           "| category | held-back items | reference correct | accuracy [Wilson 95%] | no-call score |",
           "|---|---|---|---|---|"]
    for c in cats.itertuples():
        out.append(f"| {c.Index} | {int(c.n)} | {int(c.correct)} | {pct(c.acc, 1)} [{pct(c.acc_ci_low, 1)}, "
                   f"{pct(c.acc_ci_high, 1)}] | {pct(c.no_call_floor, 1)} |")
    out += ["", f"**LiveCodeBench** (`livecodebench`): not measured: {prov['not_measured']['livecodebench']}. The rule "
                f"cannot be applied to it here, so it does not enter the embedded composite.", ""]
    return out


FILES = {"docs/variants.md": variants_page, "docs/power.md": power_page}  # whole generated files, relative to the repository

BLOCKS = {"results-table": results_table, "study-notes": study_notes, "reading": reading,
          "cohort-tables": cohort_tables, "accuracy-table": accuracy_table}


# ----------------------------------------------------------------------------------------- README

def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- numbers:{re.escape(name)} -->\n)(.*?)(<!-- /numbers:{re.escape(name)} -->)",
                      re.S)


def render(text: str, data: Path = DATA) -> str:
    """`text` with every generated block rewritten; NumbersError if a block's markers are missing."""
    for name, fn in BLOCKS.items():
        pat = _pattern(name)
        if not pat.search(text):
            raise NumbersError(f"{README.name}: block {name!r} not found (markers <!-- numbers:{name} -->)")
        body = fn(data).rstrip("\n") + "\n"
        text = pat.sub(lambda m, b=body: m.group(1) + b + m.group(3), text)
    return text


def stale_blocks(text: str, data: Path = DATA) -> list[str]:
    """Names of the blocks whose text differs from what `render` writes."""
    new = render(text, data)
    return [n for n in BLOCKS if _pattern(n).search(text).group(2) != _pattern(n).search(new).group(2)]


def stale_files(root: Path = REPO, data: Path = DATA) -> list[str]:
    """The generated files (FILES) that are missing or differ from what `main` writes."""
    return [name for name, fn in FILES.items()
            if not (root / name).is_file() or (root / name).read_text() != fn(data).rstrip("\n") + "\n"]


def main(check: bool = False, readme: Path = README, data: Path = DATA, root: Path = REPO) -> int:
    text = readme.read_text()
    if check:
        stale = stale_blocks(text, data)
        files = stale_files(root, data)
        if stale or files:
            print(f"{readme}: generated block(s) {stale} and file(s) {files} are stale; run `make numbers`")
            return 1
        print(f"{readme}: generated blocks and files up to date")
        return 0
    readme.write_text(render(text, data))
    for name, fn in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(fn(data).rstrip("\n") + "\n")
    print(f"{readme}: {len(BLOCKS)} generated blocks written; {', '.join(FILES)} written")
    return 0
