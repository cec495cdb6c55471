"""Shared fixtures: the real embedded references (exported once per cache) and a tiny random Llama."""

from __future__ import annotations

import os
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
