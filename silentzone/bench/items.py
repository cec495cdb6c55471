"""One benchmark item, as every task's loader returns it (tasks, bfcl, livecodebench)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    id: str
    content: dict  # canonical source fields: what item_hash hashes
    requests: tuple[tuple[str, str], ...] = ()  # (context, continuation) per choice; lastword: 1
    gold: int = 0
    prompt: str = ""  # generation prompt (user message when the task uses the chat template)
    meta: dict = field(default_factory=dict)  # scorer inputs: answer, tests, instructions, ...
