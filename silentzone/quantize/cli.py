"""`silentzone quantize --study smollm2 --profile smoke [--only Q8_0,Q4_0]` (light imports only)."""

from __future__ import annotations

import sys


def _quantize(args) -> int:
    from ..config import load_study
    from ..paths import study_dir
    from . import make_cohort
    study = load_study(args.config or args.study, args.profile)
    frame = make_cohort(study, only=args.only or None, progress=not args.quiet, device=args.device)
    cols = ["quant_id", "method", "requested_type", "main_type", "bpw", "bytes", "wall_s", "status"]
    show = frame[cols].assign(MB=(frame["bytes"] / 1e6).round(1), bpw=frame["bpw"].round(3),
                              wall_s=frame["wall_s"].round(1)).drop(columns="bytes")
    print(show.to_string(index=False))
    failed = frame[frame["status"] != "ok"]
    print(f"{len(frame) - len(failed)} ok, {len(failed)} failed; table: "
          f"{study_dir(study.study, study.profile_name) / 'quants.csv'}")
    for _, r in failed.iterrows():
        print(f"failed {r['quant_id']}: {r['reason']}", file=sys.stderr)
    return 1 if (len(failed) and args.strict) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="make the study's quant cohort (artifacts + quants.csv)")
    p.add_argument("--study", default="smollm2", help="configs/<study>.yaml")
    p.add_argument("--config", help="explicit config path (overrides --study)")
    p.add_argument("--profile", default="default")
    p.add_argument("--only", default="", help="comma-separated quant ids to build (others: reuse only)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any quant failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="where artifacts are checked and load-time quants "
                                                   "loaded: cpu or cuda")
    p.set_defaults(fn=_quantize)
