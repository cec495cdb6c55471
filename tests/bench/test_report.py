"""Accuracy table (Wilson intervals) and flips vs the reference: worked examples."""

from __future__ import annotations

import pandas as pd
import pytest

from silentzone.bench.report import accuracy_table, flips, wilson


def test_wilson_worked_example():
    # k=8, n=10, z=1.96: centre (0.8 + 1.9208/10)/1.38415 = 0.71675; half-width 0.22638
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


def test_flips_and_accuracy():
    rows = [("reference", "sciq", "a", True), ("reference", "sciq", "b", False),
            ("reference", "sciq", "c", True), ("Q4_0", "sciq", "a", False),
            ("Q4_0", "sciq", "b", True), ("Q4_0", "sciq", "c", True)]
    f = pd.DataFrame(rows, columns=["model", "task", "item_id", "correct"]).assign(kld_mean=0.0)
    fl = flips(f).iloc[0]
    assert (fl.lost, fl.gained, fl.net, fl.flip_rate) == (1, 1, 0, pytest.approx(2 / 3))
    acc = accuracy_table(f).set_index("model")
    assert acc.loc["reference", "acc"] == pytest.approx(2 / 3) and acc.loc["reference", "chance"] == 0.25
