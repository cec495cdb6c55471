"""Command line: `silentzone <command>`. Errors are one line on stderr with a non-zero exit status.

    silentzone validate configs/smollm2.yaml [--profile smoke]
    silentzone schema [quants|fidelity|samples]
    silentzone prepare --study smollm2          # export and check the float reference
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import SilentzoneError


def _validate(args) -> int:
    from .config import load
    for path in args.configs:
        study = load(path, args.profile)
        print(f"{path}: ok (study {study.study}, profile {study.profile_name}, "
              f"{len(study.quants)} quants, {len(study.tasks)} tasks, config_hash {study.config_hash})")
    return 0


def _schema(args) -> int:
    from analysis.contracts import SCHEMAS, STATS_KEYS
    names = args.names or list(SCHEMAS)
    for n in names:
        if n not in SCHEMAS:
            raise SilentzoneError(f"silentzone schema: unknown table {n!r} (have {sorted(SCHEMAS)})")
        print(SCHEMAS[n].markdown(), end="\n\n")
    if not args.names:
        print("**stats.json** keys: " + ", ".join(f"`{k}`" for k in STATS_KEYS))
    return 0


def _prepare(args) -> int:
    from .config import load_study
    from .models import resolve
    study = load_study(args.config or args.study, args.profile)
    ref = resolve(study.reference.model, study.reference.dtype)
    print(json.dumps({"study": study.study, "hf_dir": str(ref.hf_dir), "gguf": str(ref.gguf),
                      "check": ref.info["check"]}, indent=2))
    return 0


def _numbers(args) -> int:
    from .report.numbers import main
    return main(check=args.check)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="silentzone", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check study configs (one-line errors)")
    v.add_argument("configs", nargs="+")
    v.add_argument("--profile", default="default")
    v.set_defaults(fn=_validate)
    s = sub.add_parser("schema", help="print the result-contract schemas")
    s.add_argument("names", nargs="*")
    s.set_defaults(fn=_schema)
    r = sub.add_parser("prepare", help="export the study's float reference (HF + GGUF) and check it")
    r.add_argument("--study", default="smollm2")
    r.add_argument("--config")
    r.add_argument("--profile", default="default")
    r.set_defaults(fn=_prepare)
    n = sub.add_parser("numbers", help="write the README's generated results blocks from data/<study>/")
    n.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is stale")
    n.set_defaults(fn=_numbers)
    # Stage packages add their own subcommands (quantize, kld/capture/score, bench, ...).
    import importlib
    import importlib.util
    for mod in ("silentzone.quantize.cli", "silentzone.fidelity.cli", "silentzone.bench.cli",
                "silentzone.workflow.cli"):
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(mod).register(sub)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if not is_user_error(e):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


def is_user_error(e: BaseException) -> bool:
    """Bad input or a tool's failure (SilentzoneError, or the table contracts' ContractError of the
    pure `analysis` library): one line, exit 2. Anything else is a bug and keeps its traceback."""
    if isinstance(e, SilentzoneError):
        return True
    from analysis.contracts import ContractError
    return isinstance(e, ContractError)


def one_line(e: BaseException) -> str:
    """The error's message on one line (its lines joined by ' | '); the class name if it has none."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " | ".join(lines) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
