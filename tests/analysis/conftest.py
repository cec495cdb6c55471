"""Synthetic studies in the contract format, for the analysis tests."""

import json
import math

import numpy as np
import pandas as pd
import pytest

TASKS = ("piqa", "sciq")


def _make_study(n_quants: int = 14, n_items: int = 150, tasks=TASKS, seed: int = 0, study: str = "toy"):
    """A small study: a reference and `n_quants` quants with noise levels 0.002 to 0.3 (geometric).

    Each quant flips a correct reference answer to wrong with probability s and a wrong one to right
    with probability s / 2; per-prompt KLD ~ s * lognormal; fidelity metrics on 2 corpora x 2 ctx.
    The last quant has status 'failed' (no samples, no fidelity). Returns (samples, fidelity, quants).
    """
    rng = np.random.default_rng(seed)
    levels = np.geomspace(0.002, 0.3, n_quants)
    ids = [f"q{i:02d}" for i in range(n_quants)]
    items = [(t, f"{t}-{j:03d}") for t in tasks for j in range(n_items)]
    ref = rng.random(len(items)) < 0.6
    rows = []

    def add(model, correct, kld):
        for (task, item), c, k in zip(items, correct, kld):
            rows.append(dict(study=study, model=model, task=task, item_id=item, item_hash=f"h-{item}",
                             prompt_hash=f"p-{item}", correct=bool(c), margin=float(rng.normal()),
                             kld_mean=float(k), kld_max=float(3 * k)))

    add("reference", ref, np.zeros(len(items)))
    for q, s in zip(ids, levels):
        u = rng.random(len(items))
        correct = np.where(ref, u >= s, u < s / 2)
        add(q, correct, s * rng.lognormal(0, 0.5, len(items)))
    samples = pd.DataFrame(rows)
    fid = []
    for q, s in zip(ids, levels):
        for corpus in ("c4", "wiki"):
            for ctx in (256, 512):
                noise = rng.lognormal(0, 0.2)
                for metric, v in (("kld_mean", s * noise), ("kld_p99", 10 * s * noise ** 2),
                                  ("top1_agreement", 1 - s * noise)):
                    fid.append(dict(study=study, quant_id=q, corpus=corpus, ctx=ctx, metric=metric,
                                    value=float(v), n_tokens=1024, tokens_hash=f"t-{corpus}-{ctx}"))
    fidelity = pd.DataFrame(fid)
    man = []
    for i, (q, s) in enumerate(zip(ids, levels)):
        failed = i == n_quants - 1
        man.append(dict(study=study, quant_id=q, method="gguf", recipe=json.dumps({"s": float(s)}),
                        recipe_hash=f"r{i}", requested_type="Q4_0", tensor_types="{}",
                        bpw=float(8 - 20 * s), bytes=1000 + i, sha256=f"sha{i}", tool_versions="{}",
                        wall_s=1.0, status="failed" if failed else "ok", reason="oom" if failed else ""))
    quants = pd.DataFrame(man)
    failed_id = ids[-1]
    samples = samples[samples["model"] != failed_id].reset_index(drop=True)
    fidelity = fidelity[fidelity["quant_id"] != failed_id].reset_index(drop=True)
    return samples, fidelity, quants


@pytest.fixture(scope="session")
def make_study():
    """The synthetic-study factory `_make_study(n_quants, n_items, tasks, seed, study)`."""
    return _make_study


@pytest.fixture(scope="session")
def study():
    """One default synthetic study (samples, fidelity, quants); treat as read-only."""
    return _make_study()


def _samples_from(spec: dict, kld: dict | None = None, study: str = "toy") -> pd.DataFrame:
    """SAMPLES rows from {model: {task: "1011"}} ('1' = correct, item j of a task is f"{task}-{j}");
    kld: optional {model: {task: [per-item kld_mean]}} (default 0.1 for quants, 0 for the reference)."""
    rows = []
    for model, tasks in spec.items():
        for task, bits in tasks.items():
            for j, b in enumerate(bits):
                k = kld[model][task][j] if kld and model in kld else (0.0 if model == "reference" else 0.1)
                rows.append(dict(study=study, model=model, task=task, item_id=f"{task}-{j}",
                                 item_hash=f"h-{task}-{j}", prompt_hash=f"p-{task}-{j}", correct=b == "1",
                                 margin=float("nan"), kld_mean=float(k), kld_max=float(k)))
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def samples_from():
    """The tiny-SAMPLES factory `_samples_from(spec, kld=None, study='toy')`."""
    return _samples_from


@pytest.fixture(scope="session")
def pairing_p():
    """A second library's exact Spearman p: scipy.stats.permutation_test of |rho| over every order of x
    against y (one sample, 'pairings', n_resamples=inf), rho from scipy's average ranks."""
    from scipy import stats as st

    def p(x, y) -> float:
        ry = st.rankdata(y) - st.rankdata(y).mean()

        def abs_rho(a, axis=-1):
            ra = st.rankdata(a, axis=axis)
            ra = ra - ra.mean(axis=axis, keepdims=True)
            return np.abs((ra * ry).sum(axis) / np.sqrt((ra * ra).sum(axis) * (ry * ry).sum()))
        res = st.permutation_test((np.asarray(x, float),), abs_rho, permutation_type="pairings",
                                  alternative="greater", n_resamples=np.inf, vectorized=True)
        assert len(res.null_distribution) == math.factorial(len(x))  # every order: exact
        return float(res.pvalue)
    return p
