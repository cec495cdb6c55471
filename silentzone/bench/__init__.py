"""Per-prompt benchmarks for the reference and every quant, with per-prompt KLD.

    from silentzone.bench.run import run_benchmarks      # driver -> SAMPLES frame (resumable)
    from silentzone.bench.tasks import get, TASKS        # task registry (offline data)
    from silentzone.bench.lmeval import import_log_samples, export_lm_eval_task
    from silentzone.bench.sandbox import run_program     # contained execution of generated code
    from silentzone.bench.report import accuracy_table, flips

Modules: data (offline loaders), tasks (registry, formats, scorers), mc (likelihood scoring with a
shared context), generate (greedy), kld (reference store, per-prompt KLD), ifeval (offline
checker), sandbox, lmeval (interop), run (driver), report, cli (`silentzone bench`).
Importing this package is light (no torch).
"""
