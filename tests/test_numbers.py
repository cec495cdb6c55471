"""Numbers in prose come from code: README.md's generated blocks equal what `silentzone numbers` writes
from data/<study>/, and the headline cells agree with an exact recomputation done here."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction

import pandas as pd
import pytest
from scipy import stats as st

from silentzone.paths import DATA, REPO
from silentzone.report import numbers as N


def test_readme_blocks_are_up_to_date():
    text = (REPO / "README.md").read_text()
    assert N.stale_blocks(text) == [], "README.md is stale: run `make numbers`"


def _rho_full_by_hand(study: str) -> float:
    """rho(kld_mean on wiki/512, composite score) over the ok quants, the composite the mean of task
    accuracies in exact fractions (independent of `analysis`)."""
    s = pd.read_csv(DATA / study / "samples.csv")
    f = pd.read_csv(DATA / study / "fidelity.csv")
    q = pd.read_csv(DATA / study / "quants.csv")
    ok = sorted(q.loc[q["status"] == "ok", "quant_id"])
    per = s.groupby(["model", "task"])["correct"].agg(["sum", "count"])
    score = {m: sum(Fraction(int(k), int(n)) for k, n in g.to_numpy()) / len(g) for m, g in per.groupby(level=0)}
    kld = f[(f.corpus == "wiki") & (f.ctx == 512) & (f.metric == "kld_mean")].set_index("quant_id")["value"]
    return st.spearmanr([kld[x] for x in ok], [float(score[x]) for x in ok]).statistic


def test_headline_cells_agree_with_the_data():
    """The full-cohort rho of each study as printed in README.md equals the exact recomputation,
    rounded as printed (two decimals)."""
    text = (REPO / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| rho(KLD, score), full cohort |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ours = cells[-2:]  # the two small-model columns, smollm2 then gemma3
    for study, cell in zip(N.STUDIES, ours):
        printed = float(re.match(r"([+-]\d\.\d\d)", cell).group(1))
        assert printed == round(_rho_full_by_hand(study), 2), (study, cell)


def test_stale_block_is_reported_and_missing_markers_fail_in_one_line(tmp_path):
    text = (REPO / "README.md").read_text()
    stale = text.replace("<!-- numbers:reading -->\n", "<!-- numbers:reading -->\nan old number 0.99\n", 1)
    assert N.stale_blocks(stale) == ["reading"]
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    assert N.main(check=True, readme=readme) == 1
    assert N.main(readme=readme) == 0 and N.main(check=True, readme=readme) == 0
    with pytest.raises(N.NumbersError, match="block 'results-table' not found"):
        N.render(text.replace("<!-- numbers:results-table -->", ""))
    data = tmp_path / "data"
    shutil.copytree(DATA / "smollm2", data / "smollm2")
    shutil.copytree(DATA / "gemma3", data / "gemma3")
    (data / "gemma3" / "stats.json").unlink()
    with pytest.raises(N.NumbersError, match=r"gemma3/stats.json: file not found"):
        N.render(text, data)
