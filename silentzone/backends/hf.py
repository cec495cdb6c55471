"""transformers (HF formats: a float export, a saved quantized model, a load-time quant): `HFModel`.

Every forward runs under torch.no_grad, never inference_mode (optimum-quanto int4 fails under it).
Multiple choice shares the context's KV cache across the choices (sequential: the cache repeated
across the choices, all continuations one right-padded batch; batched: one forward under a
tree-shaped 4D mask); see bench/mc.py for what each way gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Model, torch_dtype


class HFModel(Model):
    kind = "transformers"

    def __init__(self, model, name: str = "", device: str = "cpu"):
        self.model = model
        self.name = name
        self.device = device
        self.vocab_size = int(model.config.get_text_config().vocab_size)

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch
        with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
            out = self.model(torch.tensor([ids], device=self.device)).logits[0]
        return out.float().cpu().numpy()

    def attention(self) -> dict:
        cfg = self.model.config
        dtype = str(getattr(self.model, "dtype", "")).replace("torch.", "")
        return {"engine": self.kind, "kv_cache": dtype or "unknown",
                "attention": str(getattr(cfg, "_attn_implementation", None) or "eager")}

    def tokenizer(self):
        """The HF tokenizer saved with the model (beside its weights or at `source`), or None;
        looked up once."""
        if not hasattr(self, "_tok"):
            self._tok = _saved_tokenizer(self)
        return self._tok

    def tokenize(self, text: str) -> list[int] | None:
        tok = self.tokenizer()
        return None if tok is None else [int(i) for i in tok(text)["input_ids"]]

    def bos(self) -> int | None:
        ids = self.tokenize("a")
        tok = self.tokenizer()
        if ids and tok is not None and tok.bos_token_id is not None and ids[0] == tok.bos_token_id:
            return int(tok.bos_token_id)
        return None

    def window_logits(self, windows: np.ndarray, first: int, out=None):
        """A torch tensor on the model's device, a slice of the forward's logits_to_keep rows (no
        copy; `out` is not used)."""
        import torch
        windows = np.atleast_2d(windows)
        x = torch.from_numpy(windows.astype(np.int64))
        if str(self.device).startswith("cuda"):  # page-locked: the copy does not wait for the device
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        keep = windows.shape[1] - first
        with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
            try:
                z = self.model(x, logits_to_keep=keep).logits
            except TypeError:
                z = self.model(x).logits
            return z[:, -keep:-1]

    def shared_logits(self, ctx_ids, conts, batched: bool):
        if batched and len(conts) > 1 and self.packable(len(ctx_ids) + max(len(c) for c in conts)):
            return self._packed(ctx_ids, conts)
        return self._shared(ctx_ids, conts)

    def packable(self, total: int) -> bool:
        """Whether one forward over context + all continuations (a tree mask) equals per-choice
        passes: every layer is attention (no recurrent state, which would run through the other
        choices) and no sliding window is shorter than the packed length (a custom mask replaces it)."""
        cfg = self.model.config.get_text_config()
        kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        if not kinds <= {"full_attention", "sliding_attention"}:
            return False
        win = getattr(cfg, "sliding_window", None)
        return not ("sliding_attention" in kinds and win and total > win)

    def _packed(self, ctx_ids, conts):
        """One forward of [context, choice 1, ..., choice k]: each choice token attends to the
        context and to its own earlier tokens (a 4D mask), at the positions it has in its own full
        pass."""
        import torch
        m, dev = self.model, self.device
        n = len(ctx_ids)
        ids = list(ctx_ids) + [t for c in conts for t in c]
        pos = list(range(n)) + [n + j for c in conts for j in range(len(c))]
        T = len(ids)
        allow = torch.zeros((T, T), dtype=torch.bool)
        allow[:n, :n] = torch.ones((n, n), dtype=torch.bool).tril()
        allow[n:, :n] = True
        o = n
        for c in conts:
            allow[o: o + len(c), o: o + len(c)] = torch.ones((len(c), len(c)), dtype=torch.bool).tril()
            o += len(c)
        dtype = m.dtype  # an additive float mask: what eager attention adds and sdpa accepts
        mask = torch.zeros((1, 1, T, T), dtype=dtype)
        mask.masked_fill_(~allow, torch.finfo(dtype).min)
        with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
            out = m(input_ids=torch.tensor([ids], device=dev), attention_mask=mask.to(dev),
                    position_ids=torch.tensor([pos], device=dev), use_cache=False)
        lg = out.logits[0].float().cpu().numpy()
        outs, o = [], n
        for c in conts:
            outs.append(lg[o: o + len(c)])
            o += len(c)
        return lg[:n], outs

    def _shared(self, ctx_ids, conts):
        """One forward of the context with use_cache, then the cache repeated across the choices and
        all continuations run as one right-padded batch (right padding needs no mask: a real token
        never attends to a later pad)."""
        import torch
        m, dev = self.model, self.device
        lens = [len(c) for c in conts]
        batch = torch.zeros((len(conts), max(lens)), dtype=torch.long)
        for i, c in enumerate(conts):
            batch[i, : len(c)] = torch.tensor(c)
            batch[i, len(c):] = c[-1]  # any real id: pads sit after the real tokens
        with torch.no_grad():  # not inference_mode: optimum-quanto int4 fails under it
            out = m(input_ids=torch.tensor([list(ctx_ids)], device=dev), use_cache=True)
            cache = out.past_key_values
            if len(conts) > 1:
                try:
                    cache.batch_repeat_interleave(len(conts))
                except (AttributeError, NotImplementedError):
                    # caches with recurrent layers (Qwen3.5/3.6 Gated DeltaNet) cannot be repeated:
                    # run the context once per continuation, as one batch
                    ctx = torch.tensor([list(ctx_ids)] * len(conts), device=dev)
                    cache = m(input_ids=ctx, use_cache=True).past_key_values
            out2 = m(input_ids=batch.to(dev), past_key_values=cache, use_cache=True)
        ctx_logits = out.logits[0].float().cpu().numpy()
        cl = out2.logits.float().cpu().numpy()
        return ctx_logits, [cl[i, : lens[i]] for i in range(len(conts))]

    def decode_steps(self, prompt_ids):
        import torch
        m, dev = self.model, self.device
        with torch.no_grad():
            out = m(input_ids=torch.tensor([list(prompt_ids)], device=dev), use_cache=True)
        while True:
            tok = yield out.logits[0, -1].float().cpu().numpy()
            with torch.no_grad():
                out = m(input_ids=torch.tensor([[tok]], device=dev), past_key_values=out.past_key_values,
                        use_cache=True)


def _saved_tokenizer(m: HFModel):
    """The HF tokenizer that belongs to a transformers model, or None if none is saved with it."""
    from transformers import AutoTokenizer
    cands = [getattr(m.model, "name_or_path", "") or "", str(getattr(m, "source", ""))]
    for c in cands:
        d = Path(c)
        if c and d.is_dir() and any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(d)
    return None


def load_hf(d: Path, device: str, name: str, dtype: str | None = None) -> HFModel:
    """An HF model directory (a float export or a saved quantized model), in eval mode."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch_dtype(device, dtype),
                                                 device_map=device).eval()
    return HFModel(model, name, device)
