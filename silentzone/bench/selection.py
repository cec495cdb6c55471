"""Which tasks a powered study scores: a rule fixed before any quant is looked at (issue 19).

    table = select_tasks(study)          # study: a profile with selection_items > 0 (e.g. `power`)
    table[table.selected].task           # the tasks the profile should list

The rule (RULE below): for every candidate task, the float reference alone answers the task's
held-back items (the last `selection_items` of its source order, `Task.held_back_items`; the study
never scores them); the task is selected when the lower end of the Wilson 95% interval of the
reference's accuracy lies above the task's chance level. Only the reference is run, so the choice
cannot depend on how any quant scores, and the items it looks at are not the study's.

Candidates are the likelihood-scored tasks of the registry (multiple choice and LAMBADA's last
word): the generation families (IFEval, GSM8K, MATH-500, HumanEval, MBPP, tool calling,
LiveCodeBench) cost one decode per item and answer, which a powered CPU or one-GPU run of thousands
of items per task cannot pay; the paper configs keep them.

The table goes to data/<study>/task_selection.csv with provenance (the rule, the held-back count,
the reference's KV cache); `tests/bench/test_selection.py` checks that each embedded study's
`power` profile lists exactly the selected tasks.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .report import wilson
from .tasks import TASKS

RULE = ("the float reference alone answers the last {k} items of each candidate task (never part of "
        "the study); a task is selected when the lower end of the Wilson 95% interval of its accuracy "
        "lies above the task's chance level")

COLUMNS = ("study", "task", "kind", "chance", "n", "correct", "acc", "acc_ci_low", "acc_ci_high",
           "selected", "n_study")


def candidates() -> list[str]:
    """The likelihood-scored tasks of the registry, in registry order."""
    return [t.name for t in TASKS.values() if t.kind in ("mc", "lastword")]


def decide(correct: int, n: int, chance: float) -> tuple[float, float, bool]:
    """(Wilson 95% low, high, selected) for `correct` of `n` items at chance level `chance`."""
    lo, hi = wilson(int(correct), int(n))
    return lo, hi, bool(lo > chance)


def select_tasks(study, tasks: list[str] | None = None, threads: int | None = None,
                 device: str = "cpu", out: str | Path | None = None) -> pd.DataFrame:
    """Run the rule on `tasks` (default: `candidates()`) and write the table (default
    data/<study>/task_selection.csv). The reference's answers are cached under the study's cache
    directory (selection-k<k>/), so an interrupted run resumes."""
    from ..errors import SilentzoneError
    from ..models import resolve
    from ..paths import REPO, study_dir
    from ..provenance import record
    from ..report.products import write_csv
    from .run import run_benchmarks
    k = int(study.profile.selection_items)
    if k <= 0:
        raise SilentzoneError(f"{study.source}: profiles.{study.profile_name}.selection_items: the "
                              f"selection rule needs held-back items (> 0), got {k}")
    names = list(tasks or candidates())
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
                     "n_study": len(task.items(None, held_back=k))})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(out) if out else REPO / "data" / study.study / "task_selection.csv"
    prov = record(study.config_hash, {"selection": "held_back_last"}, stage="task_selection",
                  rule=RULE.format(k=k), selection_items=k, profile=study.profile_name,
                  reference_kv_cache=study.kv_cache)
    prov.pop("created_utc", None)
    write_csv(table, out, prov)
    return table
