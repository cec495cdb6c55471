"""Small summaries of a SAMPLES frame: accuracy with Wilson intervals, flips vs the reference.

    accuracy_table(frame)   model x task: n, acc, 95% Wilson CI, chance, kld_mean
    flips(frame)            model x task: items lost / gained vs the reference, net, flip rate
"""

from __future__ import annotations

import math

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
