"""Import lm-evaluation-harness `--log_samples` output into the per-prompt SAMPLES table.

    frame = import_log_samples("out/samples_piqa_2026-11-22T07-00-00.jsonl", study="smollm2",
                               model="Q4_K_M-vllm")

So that results from users' own runs (vLLM, HF on a GPU, an API) enter the analysis. Each jsonl
line of lm-eval's per-sample log is one (doc, filter): doc_id, doc, target, arguments, resps,
filtered_resps, the metric values (acc, acc_norm, exact_match, prompt_level_strict_acc, pass@1,
...) and, from lm-eval 0.4.3 on, doc_hash / prompt_hash (sha256 of the doc and prompt text).

Mapping:
    task         from the file name samples_<task>_<timestamp>.jsonl (or `task=`)
    item_id      "<task>-<doc_id>"
    item_hash    lm-eval's doc_hash[:16] if present, else sha256[:16] of the doc (canonical JSON)
    prompt_hash  lm-eval's prompt_hash[:16] if present, else sha256[:16] of `arguments`
    correct      the first present of `metrics` (acc, exact_match, prompt_level_strict_acc, pass@1, ...)
    margin       multiple choice (filtered_resps = [[loglik, is_greedy], ...], integer target):
                 gold minus best wrong log-likelihood; NaN otherwise
    kld_mean/max NaN: the log holds no distributions (run our teacher-forced pass for KLD)
lm-eval hashes text, not token ids: imported rows join with other lm-eval imports of the same task
and harness version, not with rows scored natively by `silentzone.bench`.
Both the nested (<= 0.4.x: [[[ll, greedy]], ...]) and the flattened (v0.7) layouts, numbers or
strings, are accepted. A line that cannot be read fails with one line naming file and line.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from ..provenance import hash_obj
from ..tables import SAMPLES, ContractError
from analysis.contracts import validate
from ..errors import SilentzoneError

CORRECT_METRICS = ("acc", "exact_match", "prompt_level_strict_acc", "pass@1", "pass_at_1", "em",
                   "acc_norm", "f1")


class LogSamplesError(SilentzoneError, ValueError):
    """An lm-eval log_samples file cannot be read (one line naming the file and line)."""


def _num(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        if v in ("True", "False"):
            return float(v == "True")
        return float(v)
    raise TypeError(f"not a number: {v!r}")


def _pairs(resps) -> list[tuple[float, float]] | None:
    """[(loglik, is_greedy), ...] from filtered_resps in any of lm-eval's layouts, else None."""
    out = []
    for r in resps if isinstance(resps, list) else []:
        while isinstance(r, list) and len(r) == 1 and isinstance(r[0], list):
            r = r[0]  # nested layout [[ll, greedy]]
        if not (isinstance(r, (list, tuple)) and len(r) == 2):
            return None
        try:
            out.append((_num(r[0]), _num(r[1])))
        except (TypeError, ValueError):
            return None
    return out or None


def _task_from_name(path: Path) -> str:
    m = re.match(r"samples_(.+?)_\d{4}-\d{2}-\d{2}T[\d\-.:]+$", path.stem)
    return m.group(1) if m else path.stem.removeprefix("samples_")


def import_log_samples(path: str | Path, study, model: str, task: str | None = None,
                       filter: str | None = None) -> pd.DataFrame:
    """SAMPLES rows for one lm-eval samples_<task>_*.jsonl file (validated)."""
    path = Path(path)
    if not path.is_file():
        raise LogSamplesError(f"{path}: file not found")
    study_name = getattr(study, "study", study)
    task = task or _task_from_name(path)
    rows, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            s = json.loads(line)
        except json.JSONDecodeError as e:
            raise LogSamplesError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
        if "doc_id" not in s:
            raise LogSamplesError(f"{path}: line {n}: no doc_id (not an lm-eval log_samples line)")
        flt = s.get("filter", "none")
        if filter is not None and flt != filter:
            continue
        if s["doc_id"] in seen:  # several filters per doc: keep the first unless one is chosen
            continue
        seen.add(s["doc_id"])
        metric = next((m for m in list(s.get("metrics", [])) + list(CORRECT_METRICS) if m in s), None)
        if metric is None:
            raise LogSamplesError(f"{path}: line {n}: no metric value among {CORRECT_METRICS}")
        pairs = _pairs(s.get("filtered_resps"))
        target = s.get("target")
        margin = math.nan
        if pairs and len(pairs) > 1 and isinstance(target, (int, str)) and str(target).isdigit():
            g = int(target)
            if 0 <= g < len(pairs):
                ll = [p[0] for p in pairs]
                margin = ll[g] - max(v for i, v in enumerate(ll) if i != g)
        doc = s.get("doc", {})
        rows.append({
            "study": study_name, "model": model, "task": task,
            "item_id": f"{task}-{s['doc_id']}",
            "item_hash": (s.get("doc_hash") or hash_obj(doc, 64))[:16],
            "prompt_hash": (s.get("prompt_hash") or hash_obj(s.get("arguments"), 64))[:16],
            "correct": bool(_num(s[metric]) > 0.5), "margin": float(margin),
            "kld_mean": math.nan, "kld_max": math.nan,
            "metric": metric, "filter": flt, "source": "lm-eval",
        })
    if not rows:
        raise LogSamplesError(f"{path}: no samples" + (f" with filter {filter!r}" if filter else ""))
    frame = pd.DataFrame(rows)
    try:
        return validate(frame, SAMPLES, where=str(path))
    except ContractError as e:
        raise LogSamplesError(str(e)) from None


def export_lm_eval_task(task: str, n: int, out_dir: str | Path) -> Path:
    """Write one of our multiple-choice tasks as a local-data lm-eval task (no hub needed).

    Produces <out_dir>/<task>_local.yaml and <task>_local.jsonl with exactly our contexts and
    continuations (target_delimiter "", continuations keep their leading space), so that
        lm_eval --model hf --model_args pretrained=<hf dir> --include_path <out_dir> \\
                --tasks <task>_local --log_samples --output_path <dir>
    scores the same strings as `silentzone.bench`; its samples_*.jsonl imports with
    `import_log_samples`. Returns the YAML path.
    """
    from . import tasks as T
    t = T.get(task)
    if t.kind != "mc":
        raise ValueError(f"export_lm_eval_task: {task} is not a multiple-choice task")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for it in t.items(n):
        ctxs = {c for c, _ in it.requests}
        if len(ctxs) != 1:
            raise ValueError(f"export_lm_eval_task: {it.id} has per-choice contexts")
        rows.append({"id": it.id, "context": it.requests[0][0],
                     "choices": [c for _, c in it.requests], "gold": it.gold})
    data_file = out / f"{task}_local.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yaml_file = out / f"{task}_local.yaml"
    yaml_file.write_text(
        f"task: {task}_local\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data_file}\n"
        "validation_split: validation\n"
        "output_type: multiple_choice\n"
        "doc_to_text: \"{{context}}\"\n"
        "doc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{gold}}\"\n"
        "target_delimiter: \"\"\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        "metadata:\n  version: 1.0\n")
    return yaml_file
