"""`silentzone reproduce` (the whole study through Snakemake) and `silentzone stage` (one DAG job).

    silentzone reproduce --study smollm2 --profile smoke --cores 2
    silentzone reproduce --study smollm2 --dry-run                  # show the jobs, run nothing
    silentzone reproduce --config configs/paper-x.yaml --profile gpu --executor-profile slurm
    silentzone stage quant --study smollm2 --profile smoke --quant Q4_0 --out wf/quants/Q4_0.json
    silentzone compare-results --against HEAD smollm2 gemma3       # a rerun matches what is committed
    silentzone compare-results --cross-engine --against DIR smollm2 # a rerun on another engine (GPU)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..settings import current

STAGES = ("reference", "quant", "capture", "score", "bench")


def _study(args):
    from ..config import load_study
    return load_study(args.config or args.study, args.profile)


def _stage(args) -> int:
    from . import stages
    study = _study(args)
    out = Path(args.out)
    if args.name == "reference":
        stages.reference(study, out)
    elif args.name == "quant":
        stages.quant(study, args.quant, out, device=args.device)
    elif args.name == "capture":
        stages.capture(study, args.corpus, args.ctx, out, device=args.device)
    elif args.name == "score":
        stages.score(study, args.quant, Path(args.quant_marker), out, device=args.device)
    elif args.name == "bench":
        stages.bench(study, args.quant, out,
                     Path(args.quant_marker) if args.quant_marker else None, device=args.device,
                     tasks=args.tasks, keep_store=not args.no_store)
    return 0


def _reproduce(args) -> int:
    from .run import reproduce
    study = _study(args)
    return reproduce(study, cores=args.cores, results=args.results, figures=args.figures,
                     dry_run=args.dry_run, forcerun=args.forcerun, until=args.until,
                     executor_profile=args.executor_profile, device=args.device,
                     job_threads=args.job_threads, extra=args.snakemake_args)


def _compare(args) -> int:
    from .compare import main
    return main(args.studies, args.against, engine=args.cross_engine)


def register(sub) -> None:
    c = sub.add_parser("compare-results", help="compare data/<study>/ with a git revision or a directory")
    c.add_argument("studies", nargs="+")
    c.add_argument("--against", default="HEAD", help="git revision (default HEAD) or a directory of studies")
    from .compare import ENGINE_TOLERANCES as T
    c.add_argument("--cross-engine", action="store_true",
                   help="the rerun ran on another engine (llama.cpp on CUDA, another KV cache): fidelity "
                        f"must rank the quants alike (Spearman rho >= {T['rank_rho_min']:g} per corpus, ctx "
                        "and metric), the reference's answers may flip only on near-ties (|margin| < "
                        f"{T['tie_margin']:g} nats), a quant's beyond them on at most {T['flip_rate_max'] * 100:g}%% "
                        f"of a task's items and not one way (McNemar p >= {T['flip_shift_p']:g}); headline "
                        f"numbers are reported; quants whose kld_mean moves beyond x{T['sensitive_factor']:g} "
                        "are named engine-sensitive (silentzone.workflow.compare.ENGINE_TOLERANCES)")
    c.set_defaults(fn=_compare)

    r = sub.add_parser("reproduce", help="run the whole study (Snakemake DAG of the stage notebooks)")
    r.add_argument("--study", default="smollm2", help="configs/<study>.yaml")
    r.add_argument("--config", help="explicit study YAML (overrides --study)")
    r.add_argument("--profile", default="default")
    r.add_argument("--cores", type=int, default=None, help="cores for parallel jobs (default: all)")
    r.add_argument("--job-threads", type=int, default=1, help="threads per job (default 1)")
    r.add_argument("--results", help="results directory (default: data/<study> for the default "
                                     "profile, else <study cache>/results)")
    r.add_argument("--figures", help="figures directory (default: figures/<study> for the default "
                                     "profile, else <results>/figures)")
    r.add_argument("--device", default="cpu", help="torch device of the HF-format quants (cpu, cuda)")
    r.add_argument("--dry-run", action="store_true", help="list the jobs that would run; run nothing")
    r.add_argument("--forcerun", nargs="+", metavar="RULE", help="rerun these rules and what follows")
    r.add_argument("--until", nargs="+", metavar="RULE", help="run only up to these rules")
    r.add_argument("--executor-profile", help="a Snakemake profile directory or a name under "
                                              "silentzone/workflow/profiles (e.g. slurm)")
    r.add_argument("snakemake_args", nargs="*", help="after `--`: passed to snakemake as they are")
    r.set_defaults(fn=_reproduce)

    s = sub.add_parser("stage", help="run one job of the workflow DAG (used by the Snakefile)")
    s.add_argument("name", choices=STAGES)
    s.add_argument("--study", default="smollm2")
    s.add_argument("--config")
    s.add_argument("--profile", default="default")
    s.add_argument("--quant", help="quant id (quant, score, bench; 'reference' for bench)")
    s.add_argument("--quant-marker", help="the quant's wf/quants/<id>.json (score, bench)")
    s.add_argument("--tasks", nargs="+", help="bench: only these of the profile's tasks (parallel jobs "
                                              "of one model; default: all)")
    s.add_argument("--no-store", action="store_true",
                   help="bench of the reference: its tables only, no distributions kept for the quants' KLD "
                        "(a second, float run of it; resumable like a quant's)")
    s.add_argument("--corpus")
    s.add_argument("--ctx", type=int)
    s.add_argument("--device", default=current().device,
                   help="cpu or cuda (default: $SILENTZONE_DEVICE, else cpu); every stage takes it")
    s.add_argument("--out", required=True, help="marker JSON written when the job is complete")
    s.set_defaults(fn=_stage)

    from .leases import register as register_leases
    register_leases(sub)


if __name__ == "__main__":
    sys.exit("use `silentzone reproduce` or `silentzone stage`")
