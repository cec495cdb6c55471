"""Which tasks a powered study scores: a rule fixed before any quant is looked at (issue 19).

    table = select_tasks(study)          # study: a profile with selection_items > 0 (e.g. `power`)
    table[table.selected].task           # the tasks the profile should list
    select_tasks(study, ["bfcl"])        # an opt-in generation family: its row joins the table

The rule (RULE below): for every candidate task, the float reference alone answers the task's
held-back items (`selection_items` of them, `Task.held_back_items`: a sample seeded by seeds.global
when the profile says `selection_sample: random`, as the power profiles do, else the last of the
source order, the first rule; the study never scores them); the task is selected when the lower end of the Wilson 95% interval of the
reference's accuracy lies above the task's chance level. Only the reference is run, so the choice
cannot depend on how any quant scores, and the items it looks at are not the study's.

Candidates (`candidates()`, the default) are the likelihood-scored tasks of the registry (multiple
choice and LAMBADA's last word). The generation families cost one greedy decode per item (up to
`max_new_tokens`), so they are an explicit opt-in (`OPT_IN`, `silentzone bench-select --tasks bfcl`)
and their rows are merged into the table: the rows of the tasks not asked for are kept as they are,
and the provenance lists every run (`runs`: tasks, commit, time). Tool calling (`bfcl`: BFCL's five
single-turn categories interleaved) has as its chance level the no-call floor
(`tasks.BFCL_NO_CALL`: a model that never calls a function is right on the irrelevance items alone,
240 of 1,240); its per-category counts on the held-back items go to
data/<study>/task_selection_bfcl.csv (descriptive: the rule reads the mixed task only).
LiveCodeBench cannot be put through the rule without a released problem file (`livecodebench.file`);
the embedded studies have none offline, only the project's fixture, which tests the pipeline and
is not LiveCodeBench, so asking for it there is refused in one line (`NOT_MEASURED`).

The table goes to data/<study>/task_selection.csv with provenance (the rule, the held-back count,
the reference's KV cache); `tests/bench/test_selection.py` checks that each embedded study's
`power` profile lists exactly the selected tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .report import wilson
from .tasks import TASKS

RULE = ("the float reference alone answers {k} held-back items of each candidate task (see the held_back "
        "column; never part of the study); a task is selected when the lower end of the Wilson 95% interval of its accuracy "
        "lies above the task's chance level")

COLUMNS = ("study", "task", "kind", "chance", "n", "correct", "acc", "acc_ci_low", "acc_ci_high",
           "selected", "n_study", "held_back")
# how a row's held-back items were drawn (the `held_back` column; rows written before the column
# existed were all drawn the first way)
SAMPLES = {"last": "the last {k} of the task's source order",
           "random": "a random sample of {k}, seeded by seeds.global = {seed} and the task's name"}
# provenance keys that every run of one table shares (the others are kept per run: `runs`)
SHARED = ("rule", "selection_items", "profile", "stage", "reference_kv_cache", "runs", "held_back")
# generation tasks that may be put through the rule on request (not in the default candidates)
OPT_IN = ("bfcl", "livecodebench")
NOT_MEASURED = {"livecodebench": "no release file offline (the embedded studies have only the project's "
                                 "fixture, a pipeline check, not LiveCodeBench problems)"}
CATEGORY_COLUMNS = ("study", "task", "category", "n", "correct", "acc", "acc_ci_low", "acc_ci_high",
                    "no_call_floor")


def candidates() -> list[str]:
    """The likelihood-scored tasks of the registry, in registry order."""
    return [t.name for t in TASKS.values() if t.kind in ("mc", "lastword")]


def decide(correct: int, n: int, chance: float) -> tuple[float, float, bool]:
    """(Wilson 95% low, high, selected) for `correct` of `n` items at chance level `chance`."""
    lo, hi = wilson(int(correct), int(n))
    return lo, hi, bool(lo > chance)


def bfcl_categories(frame: pd.DataFrame, task: str = "bfcl") -> pd.DataFrame:
    """Per BFCL category of the reference's rows of `task` (SAMPLES rows; categories from the items'
    meta), then "all": n, correct, accuracy with its Wilson 95% interval, and the no-call floor on
    those very items (1 on irrelevance, 0 elsewhere; for "all", the irrelevance share)."""
    cat = {it.id: it.meta["category"] for it in TASKS[task]._all()}
    g = frame[frame["task"] == task]
    cats = g["item_id"].map(cat)
    rows = []
    for c in [c for c in ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
              if (cats == c).any()] + ["all"]:
        sub = g if c == "all" else g[cats == c]
        n, k = len(sub), int(sub["correct"].sum())
        lo, hi = wilson(k, n)
        floor = float((cats == "irrelevance").mean()) if c == "all" else float(c == "irrelevance")
        rows.append({"study": g["study"].iloc[0], "task": task,
                     "category": c, "n": n, "correct": k, "acc": k / n, "acc_ci_low": lo,
                     "acc_ci_high": hi, "no_call_floor": floor})
    return pd.DataFrame(rows, columns=list(CATEGORY_COLUMNS))


def held_back(study) -> str:
    """The `held_back` value of a study's rows: "last" or "random:<seed>"."""
    return "last" if study.held_seed is None else f"random:{study.held_seed}"


def merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """`new`'s rows replace the same tasks' rows of `old`; the rest of `old` stays as it was (rows
    from before the held_back column: "last"); rows in registry order."""
    if old is not None and "held_back" not in old:
        old = old.assign(held_back="last")
    keep = old[~old["task"].isin(new["task"])] if old is not None else None
    table = pd.concat([f for f in (keep, new) if f is not None and len(f)], ignore_index=True)
    order = {t: i for i, t in enumerate(TASKS)}
    return table.sort_values("task", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def select_tasks(study, tasks: list[str] | None = None, threads: int | None = None,
                 device: str = "cpu", out: str | Path | None = None) -> pd.DataFrame:
    """Run the rule on `tasks` (default: `candidates()`) and write the table (default
    data/<study>/task_selection.csv). The reference's answers are cached under the study's cache
    directory (selection-k<k>/), so an interrupted run resumes."""
    from ..errors import SilentzoneError
    from ..models import resolve
    from ..paths import REPO, study_dir
    from ..provenance import record
    from ..tables import write_csv
    from .run import run_benchmarks
    k = int(study.profile.selection_items)
    if k <= 0:
        raise SilentzoneError(f"{study.source}: profiles.{study.profile_name}.selection_items: the "
                              f"selection rule needs held-back items (> 0), got {k}")
    names = list(tasks or candidates())
    for t in names:
        if t not in candidates() and t not in OPT_IN:
            raise SilentzoneError(f"bench-select: {t!r} is not a candidate of the rule (likelihood tasks "
                                  f"{', '.join(candidates())}; opt-in {', '.join(OPT_IN)})")
        if t in NOT_MEASURED and not study.livecodebench.file:
            raise SilentzoneError(f"{study.source}: {t}: not measured: {NOT_MEASURED[t]}; name a "
                                  f"release in livecodebench.file to put it through the rule")
    ref = resolve(study.reference.model, study.reference.dtype)
    root = study_dir(study.study, study.profile_name) / f"selection-k{k}"
    frame = run_benchmarks(study, {"reference": str(ref.gguf)}, tasks=names, threads=threads,
                           out_dir=root, device=device, combined=False, part="selection")
    rows = []
    for t in names:
        g = frame[frame["task"] == t]
        n, c = len(g), int(g["correct"].sum())
        task = TASKS[t]
        lo, hi, sel = decide(c, n, task.chance)
        rows.append({"study": study.study, "task": t, "kind": task.kind, "chance": task.chance, "n": n,
                     "correct": c, "acc": c / n, "acc_ci_low": lo, "acc_ci_high": hi, "selected": sel,
                     "n_study": len(task.items(None, held_back=k, held_seed=study.held_seed)),
                     "held_back": held_back(study)})
    new = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(out) if out else REPO / "data" / study.study / "task_selection.csv"
    prov_path = out.with_name(out.name + ".provenance.json")
    old = pd.read_csv(out) if out.is_file() else None
    prev = json.loads(prov_path.read_text()) if old is not None and prov_path.is_file() else {}
    if old is not None and (old["n"] != k).any():
        raise SilentzoneError(f"{out}: rows with other than {k} held-back items; write elsewhere (--out)")
    prov = record(study.config_hash, {"selection": held_back(study)}, stage="task_selection",
                  rule=RULE.format(k=k), selection_items=k,
                  profile=study.profile_name, reference_kv_cache=study.kv_cache,
                  held_back={key: v.format(k=k, seed=study.seeds.global_) for key, v in SAMPLES.items()})
    prov.pop("created_utc", None)
    # every run that wrote rows of this table, with what may differ between runs (config hash, commit,
    # versions, settings); the first one (before runs were listed) from its record
    def run_of(rec: dict, done: list[str]) -> dict:
        return {**{key: v for key, v in rec.items() if key not in SHARED}, "tasks": done}
    runs = prev.get("runs") or ([run_of(prev, [t for t in old["task"] if t not in names])]
                                if old is not None else [])
    runs = [r for r in runs if set(r["tasks"]) - set(names)]  # runs whose rows are all replaced go
    runs.append({**run_of(prov, names), "threads": threads, "device": device})
    table = merge(old, new)
    write_csv(table, out, {**prov, "runs": runs})
    if "bfcl" in names:
        every = TASKS["bfcl"]._all()
        write_csv(bfcl_categories(frame.assign(study=study.study)), out.with_name(out.stem + "_bfcl.csv"),
                  {**prov, "source": "the reference's bfcl rows on its held-back items, per category",
                   "bfcl_items": len(every), "max_new_tokens": TASKS["bfcl"].max_new_tokens,
                   "bfcl_irrelevance_items": sum(it.meta["category"] == "irrelevance" for it in every),
                   "not_measured": NOT_MEASURED})
    return table
