"""Capture and scoring stream window by window: peak memory does not grow with the corpus.

Two fresh processes (tests/fidelity/mem_probe.py) capture and score 8,192 tokens (the default
profile's corpus size) and 81,920 tokens of the shipped wiki text at ctx 256 into a compact store,
with two tiny random Llamas that have SmolLM2's 49,152-token vocabulary (full-size logits; a forward
pass costs milliseconds, so the test measures the pipeline, not the model).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("mem_probe.py")


@pytest.mark.slow
def test_peak_memory_is_bounded_for_a_10x_corpus(tiny_llama_dir, smollm2_ref, tmp_path):
    from silentzone.testing import make_tiny_llama
    candidate = make_tiny_llama(tmp_path / "tiny-seed1", smollm2_ref.hf_dir, seed=1)
    runs = []
    for n in (8192, 81920):
        p = subprocess.run([sys.executable, str(PROBE), str(tiny_llama_dir), str(candidate),
                            str(smollm2_ref.gguf), str(n), "256", str(tmp_path / f"store-{n}")],
                           capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    small, large = runs
    print(f"\npeak RSS: {small['n_tokens']} tokens ({small['n_windows']} windows) "
          f"{small['peak_rss_mb']:.0f} MiB; {large['n_tokens']} tokens ({large['n_windows']} windows) "
          f"{large['peak_rss_mb']:.0f} MiB")
    assert large["n_windows"] == 10 * small["n_windows"] == 320
    assert large["kld_mean"] > 0  # the two tiny models differ: this scored something
    # 10x the tokens, at most 10% (+ 40 MiB of allocator noise) more memory
    assert large["peak_rss_mb"] < 1.10 * small["peak_rss_mb"] + 40
