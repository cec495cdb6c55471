"""`silentzone bench` and `silentzone bench-import` (light imports: torch loads only when run).

    silentzone bench --study smollm2 --profile smoke
    silentzone bench --study smollm2 --models reference=/path/ref.gguf Q4_0=/path/quants/Q4_0
    silentzone bench-accuracy --study smollm2 gemma3 --n-items 300   # README's accuracy table
    silentzone bench-select --study smollm2 gemma3 --tasks bfcl      # tool calling through the rule
    silentzone bench-import --study smollm2 --model Q4_K_M-vllm out/samples_piqa_*.jsonl
Without --models: the study's float reference (GGUF) plus every quant of the profile that
`silentzone quantize` finished (bench.run.default_models: paths.quant_artifact_dir); the quants
without a finished artifact are named in one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from ..errors import SilentzoneError


def _models(study, pairs: list[str] | None) -> dict:
    if pairs:
        out = {}
        for p in pairs:
            if "=" not in p:
                raise SilentzoneError(f"silentzone bench: --models entries are name=path, got {p!r}")
            k, v = p.split("=", 1)
            out[k] = v
        if "reference" not in out:
            raise SilentzoneError("silentzone bench: --models needs reference=<GGUF or HF dir>")
        return out
    from .run import default_models
    return default_models(study)


def _bench(args) -> int:
    import logging
    from ..config import load_study
    from .run import run_benchmarks
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    study = load_study(args.config or args.study, args.profile)
    models = _models(study, args.models)
    frame = run_benchmarks(study, models, tasks=args.tasks, n_items=args.n_items, k=args.k,
                           threads=args.threads, out_dir=args.out)
    summary = frame.groupby(["model", "task"]).agg(n=("correct", "size"), acc=("correct", "mean"),
                                                   kld_mean=("kld_mean", "mean"))
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def _accuracy(args) -> int:
    import logging
    from ..config import load_study
    from .report import reference_accuracy
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.study:
        study = load_study(args.config or name, args.profile)
        table = reference_accuracy(study, args.n_items, tasks=args.tasks, out=args.out,
                                   threads=args.threads)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        bad = table[~table["above_chance"]]
        if len(bad):
            print(f"{name}: not clearly above chance: {', '.join(bad['task'])}", file=sys.stderr)
    return 0


def _select(args) -> int:
    import logging
    from ..config import load_study
    from .selection import select_tasks
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.study:
        study = load_study(args.config or name, args.profile)
        table = select_tasks(study, tasks=args.tasks, threads=args.threads, out=args.out)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        chosen = table[table["selected"]]["task"]
        print(f"{study.study}: selected {', '.join(chosen) or 'none'}")
    return 0


def _import(args) -> int:
    import pandas as pd
    from ..paths import study_dir
    from ..provenance import record
    from ..tables import SAMPLES, write_table
    from .lmeval import import_log_samples
    frame = pd.concat([import_log_samples(f, args.study, args.model) for f in args.files],
                      ignore_index=True)  # LogSamplesError: one line (silentzone.cli)
    out = Path(args.out) if args.out else (study_dir(args.study, args.profile) / "samples" / args.model /
                                           "lmeval.csv")
    write_table(frame, SAMPLES, out, record(extra_sources=[str(f) for f in args.files]))
    print(f"{out}: {len(frame)} rows, acc {frame['correct'].mean():.4f}")
    return 0


def _reference_only(p, profile: str, tasks: str, out: str) -> None:
    """The arguments of the commands that run the reference alone on several studies."""
    p.add_argument("--study", nargs="+", default=["smollm2"])
    p.add_argument("--config")
    p.add_argument("--profile", default=profile)
    p.add_argument("--tasks", nargs="+", help=f"default: {tasks}")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help=f"default: {out}")


def register(sub) -> None:
    b = sub.add_parser("bench", help="per-prompt benchmarks (SAMPLES table) for reference and quants")
    b.add_argument("--study", default="smollm2")
    b.add_argument("--config")
    b.add_argument("--profile", default="default")
    b.add_argument("--models", nargs="+", metavar="NAME=PATH", help="default: reference + built quants")
    b.add_argument("--tasks", nargs="+", help="default: the profile's tasks")
    b.add_argument("--n-items", type=int, help="default: the profile's n_items")
    b.add_argument("--k", type=int, default=1024, help="top-k reference log-probs kept for KLD")
    b.add_argument("--threads", type=int)
    b.add_argument("--out", help="default: the study directory in the cache")
    b.set_defaults(fn=_bench)
    a = sub.add_parser("bench-accuracy", help="the float reference alone on its tasks with more items: "
                                              "accuracy with Wilson CIs vs chance (data/<study>/reference_accuracy.csv)")
    _reference_only(a, "default", "the profile's tasks", "data/<study>/reference_accuracy.csv")
    a.add_argument("--n-items", type=int, default=300)
    a.set_defaults(fn=_accuracy)
    s = sub.add_parser("bench-select", help="the task-selection rule of a powered profile: the reference "
                                            "alone on held-back items (data/<study>/task_selection.csv)")
    _reference_only(s, "power", "every likelihood-scored task; opt-in generation families: "
                    "bfcl (its row joins the table)", "data/<study>/task_selection.csv")
    s.set_defaults(fn=_select)
    i = sub.add_parser("bench-import", help="import lm-eval --log_samples jsonl into a SAMPLES table")
    i.add_argument("files", nargs="+")
    i.add_argument("--study", default="smollm2")
    i.add_argument("--profile", default="default")
    i.add_argument("--model", required=True, help="model name for the rows, e.g. a quant id")
    i.add_argument("--out")
    i.set_defaults(fn=_import)
