"""Subcommands `silentzone kld`, `silentzone capture`, `silentzone score` (registered by silentzone.cli).

    silentzone kld --reference R --candidate C --text FILE --ctx N [--scoring half|all] [--json]
    silentzone capture --study smollm2 --profile smoke [--kinds compact exact] [--k 128]
    silentzone score --study smollm2 --profile smoke [--store compact] [--artifacts map.json]

Errors are one line on stderr with exit status 2 (silentzone.cli prints every SilentzoneError so).
"""

from __future__ import annotations

import json
from pathlib import Path

from .store import DEFAULT_K, KINDS, SCORING
from ..errors import SilentzoneError

_SHOWN = ("kld_mean", "kld_median", "kld_p90", "kld_p95", "kld_p99", "kld_p999", "kld_max", "rkld_mean",
          "js_mean", "topk_kld_mean", "top1_agreement", "ppl_quant", "ppl_ref", "delta_ppl", "ppl_ratio",
          "ln_ppl_ratio_mean", "dp_rms", "dp_mean", "dp_p01", "dp_p99")


def _kld(args) -> int:
    from .score import score_text
    path = Path(args.text)
    if not path.is_file():
        raise SilentzoneError(f"{path}: text file not found")
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):  # llama-perplexity -f drops one trailing newline
        text = text[:-1]
    summary, _ = score_text(args.reference, args.candidate, text, args.ctx, scoring=args.scoring,
                            device=args.device, threads=args.threads)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"reference {args.reference}\ncandidate {args.candidate}\n"
              f"ctx {args.ctx}, scoring {args.scoring}: {summary['n_windows']} windows, "
              f"{summary['n_tokens']} scored tokens")
        for k in _SHOWN:
            print(f"  {k:<18} {summary[k]:.6g}")
    return 0


def _study(args):
    from ..config import load_study
    return load_study(args.config or args.study, args.profile)


def _capture(args) -> int:
    from .capture import capture_study, stderr_log
    study = _study(args)
    stores = capture_study(study, kinds=tuple(args.kinds), k=args.k, scoring=args.scoring,
                           backend=args.backend, device=args.device, threads=args.threads,
                           log=stderr_log if args.verbose else None)
    for st in stores:
        print(f"{st.path}: {st.n_windows} windows x {st.ctx} ({st.scoring}), kinds {st.kinds}, "
              + ", ".join(f"{k} {st.nbytes(k) / 2**20:.1f} MiB" for k in st.kinds))
    return 0


def _score(args) -> int:
    from .capture import stderr_log
    from .score import fidelity_path, score_cohort
    study = _study(args)
    artifacts = None
    if args.artifacts:
        if not Path(args.artifacts).is_file():
            raise SilentzoneError(f"{args.artifacts}: --artifacts file not found")
        artifacts = json.loads(Path(args.artifacts).read_text())
    table = score_cohort(study, artifacts, kind=args.store, scoring=args.scoring, device=args.device,
                         threads=args.threads, retry_failed=args.retry_failed,
                         log=stderr_log if args.verbose else None)
    n_q = table["quant_id"].nunique() if len(table) else 0
    print(f"{fidelity_path(study)}: {len(table)} rows, {n_q} quants")
    return 0


def register(sub) -> None:
    k = sub.add_parser("kld", help="score a candidate against a reference on a text file")
    k.add_argument("--reference", required=True, help="GGUF file or HF directory")
    k.add_argument("--candidate", required=True, help="GGUF file, HF directory or quant artifact dir")
    k.add_argument("--text", required=True, help="UTF-8 text file (as llama-perplexity -f reads it)")
    k.add_argument("--ctx", type=int, required=True, help="window length in tokens")
    k.add_argument("--scoring", choices=SCORING, default="half",
                   help="half: second half of each window, as llama-perplexity (default); all")
    k.add_argument("--device", default="cpu", help="torch device for HF models")
    k.add_argument("--threads", type=int, help="CPU threads (default: all)")
    k.add_argument("--json", action="store_true", help="print one flat JSON object")
    k.set_defaults(fn=_kld)
    for name, helptext, fn in (("capture", "capture the study's reference log-prob stores", _capture),
                               ("score", "score the study's quant cohort into fidelity.csv", _score)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--study", default="smollm2")
        p.add_argument("--config", help="study YAML (default configs/<study>.yaml)")
        p.add_argument("--profile", default="default")
        p.add_argument("--scoring", choices=SCORING, default="half")
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int)
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(fn=fn)
        if name == "capture":
            p.add_argument("--kinds", nargs="+", choices=KINDS, default=["compact"])
            p.add_argument("--k", type=int, default=DEFAULT_K, help="top-k of the compact store")
            p.add_argument("--backend", choices=("llama.cpp", "transformers"), default=None,
                           help="default: llama.cpp on the CPU, transformers on a GPU")
        else:
            p.add_argument("--store", choices=KINDS, default="compact")
            p.add_argument("--artifacts", help="JSON {quant_id: artifact dir} (default: "
                                               "silentzone.quantize.artifact_dir)")
            p.add_argument("--retry-failed", action="store_true")
