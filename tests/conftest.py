"""Shared fixtures: the real embedded references (exported once per cache) and a tiny random Llama."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from silentzone.testing import make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_ref():
    from silentzone.models import resolve
    return resolve("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_ref():
    from silentzone.models import resolve
    return resolve("embedded:gemma3-270m")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_ref) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", smollm2_ref.hf_dir)


NOTEBOOK_LIMIT_S = 600  # one notebook on 2 shared cores; the slowest takes about a minute


@pytest.fixture
def run_notebook():
    """`run(src, dst, **papermill_kwargs)`: papermill.execute_notebook (kernel python3, no progress bar)
    under a wall-clock limit. A kernel that stops answering (a request lost by the kernel, as in
    ipykernel#1554, which requirements.txt avoids by pinning ipykernel 6) fails that test with a
    one-line error instead of stalling the suite until CI's limit. papermill's own `execution_timeout`
    does not cover this: it bounds cells, not the kernel_info request papermill sends after the last."""
    import papermill as pm

    def run(src, dst, *, limit_s: int = NOTEBOOK_LIMIT_S, **kwargs):
        def expire(signum, frame):
            raise TimeoutError(f"{Path(src).name}: the kernel did not finish in {limit_s} s")
        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(limit_s)
        try:
            return pm.execute_notebook(str(src), str(dst), kernel_name="python3", progress_bar=False, **kwargs)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return run
