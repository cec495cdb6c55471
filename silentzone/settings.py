"""Every environment switch of the package, typed and documented, read in one place.

    from silentzone.settings import current
    current().threads            # SILENTZONE_THREADS, else the CPU count
    markdown()                   # the README's table of switches

`current()` reads the environment on every call (cheap), so a switch set by a test or a parent process
takes effect at once, exactly as the scattered `os.environ.get` reads did before. Defaults are the ones
the code has always used; none of them changes a shipped number. `recorded()` is what provenance
records: the switches that differ from their default and may change an output (the cache location
and thread count do not), so default records keep their shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import SilentzoneError


class SettingsError(SilentzoneError, ValueError):
    """An environment switch holds a value of the wrong type (one line naming it)."""


def _on_unless_0(v: str) -> bool:
    return v != "0"


def _on_if_1(v: str) -> bool:
    return v == "1"


def _nonempty(v: str) -> bool:
    return bool(v)


@dataclass(frozen=True)
class Switch:
    env: str          # the environment variable
    attr: str         # its name on Settings
    default: str      # the default, as text (what the README shows)
    meaning: str      # one line for the README
    parse: object = str  # text -> value
    record: str = ""  # provenance key when it differs from the default ('' = not recorded)


SWITCHES: tuple[Switch, ...] = (
    Switch("SILENTZONE_HOME", "home", "~/.cache/silentzone",
           "root of the cache: llama.cpp build, exported models, quant artifacts, study directories"),
    Switch("SILENTZONE_THREADS", "threads", "CPU count",
           "CPU threads for llama.cpp, torch and the quantize tools (the workflow sets it per job)"),
    Switch("SILENTZONE_DEVICE", "device", "cpu",
           "default `--device` of `silentzone stage` (cpu or cuda)", record="device"),
    Switch("SILENTZONE_FLASH_ATTN", "flash_attn", "0",
           "1: llama.cpp flash attention (faster on a CPU, but moves logits: shipped numbers use 0)",
           _on_if_1, record="llama_flash_attn"),
    Switch("SILENTZONE_MC_BATCHED", "mc_batched", "0",
           "1: score multiple-choice continuations in one batch (moves margins by ~1e-3 nats on quantized models)",
           _on_if_1, record="mc_batched"),
    Switch("SILENTZONE_COMPILE", "compile", "1",
           "0: no torch.compile of the divergence kernels on a GPU", _on_unless_0, record="compile"),
    Switch("SILENTZONE_TRITON", "triton", "1",
           "0: no Triton row-statistics kernel on a GPU (torch instead)", _on_unless_0, record="triton"),
    Switch("SILENTZONE_OVERLAP", "overlap", "1",
           "0: compute metrics after llama.cpp's decode instead of beside it (benchmarks, debugging)",
           _on_unless_0, record="overlap"),
    Switch("SILENTZONE_BNB_CPU_PACKED", "bnb_cpu_packed", "0",
           "1: bitsandbytes 4-bit on the CPU uses the packed AVX512-BF16 kernel where it can run",
           _on_if_1, record="bnb_cpu_packed"),
    Switch("SILENTZONE_LCB_FILE", "lcb_file", "",
           "LiveCodeBench release JSONL read when a study names none (its file name is recorded)",
           record="lcb_file"),
    Switch("SILENTZONE_NO_GLOBAL_LIBSTDCXX", "no_global_libstdcxx", "",
           "any value: do not load libstdc++ globally before llama.cpp (see silentzone/_native.py)",
           _nonempty, record="no_global_libstdcxx"),
    Switch("SILENTZONE_GIT_COMMIT", "git_commit", "",
           "the commit provenance records, as '<value> (declared)', where the tree's .git is not its own "
           "(the lent GPU machine)"),
)
_BY_ATTR = {s.attr: s for s in SWITCHES}


@dataclass(frozen=True)
class Settings:
    """The environment switches as typed values (see SWITCHES for their meaning)."""
    home: Path
    threads: int
    device: str
    flash_attn: bool
    mc_batched: bool
    compile: bool
    triton: bool
    overlap: bool
    bnb_cpu_packed: bool
    lcb_file: str
    no_global_libstdcxx: bool
    git_commit: str


def _threads(v: str | None) -> int:
    if v is None:
        return os.cpu_count() or 1
    try:
        return int(v)
    except ValueError:
        raise SettingsError(f"SILENTZONE_THREADS={v!r}: must be an integer") from None


def current(env=None) -> Settings:
    """The switches as set now in `env` (default os.environ), defaults filled in."""
    env = os.environ if env is None else env
    values = {}
    for s in SWITCHES:
        raw = env.get(s.env)
        if s.attr == "home":
            values["home"] = Path(raw if raw is not None else Path.home() / ".cache" / "silentzone").expanduser()
        elif s.attr == "threads":
            values["threads"] = _threads(raw)
        else:
            values[s.attr] = s.parse(s.default if raw is None else raw)
    return Settings(**values)


def recorded(env=None) -> dict:
    """{provenance key: value} of the recorded switches whose value differs from the default."""
    now, default = current(env), current({})
    out = {}
    for f in fields(Settings):
        s = _BY_ATTR[f.name]
        v = getattr(now, f.name)
        if s.record and v != getattr(default, f.name):
            out[s.record] = Path(v).name if s.attr == "lcb_file" else v
    return out


def markdown() -> str:
    """The switches as a Markdown table (variable, default, meaning) for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    def shown(d: str) -> str:  # a literal default in code font; a description ("CPU count") as text
        return "(unset)" if not d else d if " " in d else f"`{d}`"
    rows += [f"| `{s.env}` | {shown(s.default)} | {s.meaning} |" for s in SWITCHES]
    return "\n".join(rows) + "\n"
