"""Test helpers shipped with the package (importable from any test folder)."""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer (vocab 49152), float32.

    Built from a config (no download); hidden 64 so a forward pass costs milliseconds.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5,
                      rope_theta=10000.0)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    with torch.no_grad():  # larger-than-default init so the output distribution is not flat
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def private_home(tmp: Path) -> Path:
    """A fresh SILENTZONE_HOME under `tmp` sharing the user's build, models, token and corpus caches
    (read-mostly), for tests that run the workflow or stages without touching the user's studies."""
    from .llama_tools import tool_dir
    from .models import resolve
    from .paths import cache_home
    tool_dir()  # the llama.cpp tools must exist (make setup)
    resolve("embedded:smollm2-135m-instruct")  # exported once into the user's cache
    home = tmp / "home"
    home.mkdir()
    for sub in ("build", "models", "tokens", "corpora"):
        src = cache_home() / sub
        src.mkdir(parents=True, exist_ok=True)
        (home / sub).symlink_to(src)
    return home
