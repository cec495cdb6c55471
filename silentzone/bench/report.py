"""Small summaries of a SAMPLES frame: accuracy with Wilson intervals, flips vs the reference.

    accuracy_table(frame)   model x task: n, acc, 95% Wilson CI, chance, kld_mean
    flips(frame)            model x task: items lost / gained vs the reference, net, flip rate
    reference_accuracy(study, n_items=300)   the float reference alone, more items: README table
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (default 95%)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): n, acc, Wilson 95% CI, chance level, mean per-prompt KLD."""
    from .tasks import TASKS
    rows = []
    for (m, t), g in frame.groupby(["model", "task"], sort=False):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        rows.append({"model": m, "task": t, "n": n, "acc": k / n, "ci_low": lo, "ci_high": hi,
                     "chance": TASKS[t].chance if t in TASKS else math.nan,
                     "above_chance": lo > (TASKS[t].chance if t in TASKS else math.inf),
                     "kld_mean": g["kld_mean"].mean()})
    return pd.DataFrame(rows)


def flips(frame: pd.DataFrame, reference: str = "reference") -> pd.DataFrame:
    """Items whose correctness differs from the reference's, per (model, task)."""
    ref = frame[frame.model == reference].set_index(["task", "item_id"])["correct"]
    rows = []
    for (m, t), g in frame[frame.model != reference].groupby(["model", "task"], sort=False):
        r = ref.loc[t].reindex(g["item_id"]).to_numpy()
        c = g["correct"].to_numpy()
        lost, gained = int((r & ~c).sum()), int((~r & c).sum())
        rows.append({"model": m, "task": t, "n": len(g), "lost": lost, "gained": gained,
                     "net": gained - lost, "flip_rate": (lost + gained) / len(g)})
    return pd.DataFrame(rows)


def reference_accuracy(study, n_items: int = 300, tasks: list[str] | None = None,
                       out: str | Path | None = None, threads: int | None = None,
                       device: str = "cpu") -> pd.DataFrame:
    """The study's float reference alone on its (profile's) tasks with `n_items` items each: per task
    n, acc and acc_norm with Wilson 95% CIs, the chance level, and whether the lower bound of acc's CI
    clears it. Per-task samples go to <study_dir>/accuracy-n<N>/ (a rerun resumes finished tasks);
    the table is written to `out` (default data/<study>/reference_accuracy.csv) with provenance.
    """
    from ..tables import write_csv
    from ..models import resolve
    from ..paths import REPO, study_dir
    from ..provenance import record
    from .run import run_benchmarks
    from .tasks import TASKS
    ref = resolve(study.reference.model, study.reference.dtype)
    root = study_dir(study.study, study.profile_name) / f"accuracy-n{n_items}"
    frame = run_benchmarks(study, {"reference": str(ref.gguf)}, tasks=tasks, n_items=n_items,
                           threads=threads, out_dir=root, device=device, combined=False)
    rows = []
    for t, g in frame.groupby("task", sort=False):
        n = len(g)
        k, kn = int(g["correct"].sum()), int(g["correct_norm"].sum())
        lo, hi = wilson(k, n)
        lon, hin = wilson(kn, n)
        chance = TASKS[t].chance
        rows.append({"study": study.study, "model": study.reference.model, "task": t,
                     "kind": str(g["kind"].iloc[0]), "n": n, "acc": k / n, "acc_ci_low": lo,
                     "acc_ci_high": hi, "acc_norm": kn / n, "acc_norm_ci_low": lon,
                     "acc_norm_ci_high": hin, "chance": chance,
                     "above_chance": bool(lo > chance)})
    table = pd.DataFrame(rows)
    out = Path(out) if out else REPO / "data" / study.study / "reference_accuracy.csv"
    prov_path = out.with_name(out.name + ".provenance.json")
    n_by_task = {t: n_items for t in table["task"]}
    if out.is_file() and prov_path.is_file():  # keep the rows of other tasks (e.g. IFEval, fewer items)
        old = pd.read_csv(out)
        old = old[~old["task"].isin(table["task"])]
        n_by_task = {**json.loads(prov_path.read_text()).get("n_items", {}), **n_by_task}
        n_by_task = {t: n_by_task[t] for t in [*old["task"], *table["task"]] if t in n_by_task}
        table = pd.concat([old, table], ignore_index=True)
    prov = record(study.config_hash, {"selection": None}, stage="reference_accuracy",
                  n_items=n_by_task, reference_gguf=str(ref.gguf).replace(str(Path.home()), "~"))
    prov.pop("created_utc", None)
    write_csv(table, out, prov)
    return table
