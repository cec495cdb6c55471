"""Study configs: one YAML per study (configs/<study>.yaml), loaded into frozen dataclasses.

Validation happens on load, before any work, and fails with ONE line naming the file, the key and
what is wrong (unknown key, wrong type, missing file, unknown quant method or parameter, a value out
of range: zone thresholds, sizes and counts of a profile, context lengths, seeds).
Profiles (smoke, default, full, ...) scale a study without copying it: a profile may pick a subset
of quants/tasks/corpora/contexts and sets sizes (items per task, corpus tokens, bootstrap resamples).

    study = load("configs/smollm2.yaml", profile="smoke")
    study.quants, study.profile.n_items, study.config_hash
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from .logits import KV_CACHE_TYPES
from .provenance import hash_obj
from .errors import SilentzoneError

EMBEDDED_MODELS = ("smollm2-135m-instruct", "gemma3-270m")

GGUF_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
    "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS",
    "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ1_0",
    "TQ2_0",
)
GGUF_TENSOR_TYPES = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k", "q5_1", "q5_0", "q4_k", "q4_1",
                     "q4_0", "iq4_nl", "iq4_xs", "q3_k", "q2_k")
CORPORA = ("wiki", "c4", "code", "shakespeare", "tinystories", "multilingual", "technical",
           "wikitext2")
TASKS = ("sciq", "arc_easy", "arc_challenge", "piqa", "hellaswag", "lambada", "mmlu", "openbookqa",
         "winogrande", "boolq", "ifeval", "gsm8k", "math500", "humaneval", "mbpp", "bfcl", "bfcl_simple",
         "bfcl_multiple", "bfcl_parallel", "bfcl_parallel_multiple", "bfcl_irrelevance", "livecodebench")
ZONE_DEFINITIONS = ("relative", "absolute", "kld_quantile", "bpw")


class ConfigError(SilentzoneError, ValueError):
    """A study config is invalid. str(err) is one line: '<file>: <key>: <problem>'."""


def _oneof(*allowed):
    return lambda v: v in allowed or f"must be one of {list(allowed)}, got {v!r}"


def _positive(v):
    return v > 0 or f"must be > 0, got {v!r}"


def _hub_id(v):
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", v)) or f"must be a hub repo id org/name, got {v!r}"


def _gguf_name(v):
    return (v.endswith(".gguf") and not v.startswith("/")) or \
        f"must be a .gguf file name inside the repo, got {v!r}"


def _sha256(v):
    return bool(re.fullmatch(r"[0-9a-f]{64}", v)) or f"must be 64 lower-case hex digits, got {v!r}"


def _local_gguf(v):
    p = Path(v).expanduser()
    if not (v.startswith(("/", "~")) and v.endswith(".gguf")):
        return f"must be an absolute path to a .gguf file, got {v!r}"
    return p.is_file() or f"GGUF file not found: {v}"


# Recipe parameters per quant method: name -> (type, required, check or None).
# The quantize backends read exactly these; anything else is refused on load.
METHODS: dict[str, dict[str, tuple[type, bool, Any]]] = {
    "gguf": {
        "type": (str, True, _oneof(*GGUF_TYPES)),
        "imatrix": (str, False, _oneof(*CORPORA)),            # calibration corpus for llama-imatrix
        "imatrix_chunks": (int, False, _positive),
        "output_type": (str, False, _oneof(*GGUF_TENSOR_TYPES)),   # --output-tensor-type
        "token_embedding_type": (str, False, _oneof(*GGUF_TENSOR_TYPES)),  # --token-embedding-type
        "pure": (bool, False, None),                          # --pure: no k-quant mixtures
    },
    "gptq": {
        "bits": (int, True, _oneof(2, 3, 4, 8)),
        "group_size": (int, False, None),                     # -1 = per channel
        "act_order": (bool, False, None),
        "symmetric": (bool, False, None),
        "corpus": (str, False, _oneof(*CORPORA)),
        "n_samples": (int, False, _positive),
        "seq_len": (int, False, _positive),
        "dampening": (float, False, _positive),
    },
    "awq": {
        "bits": (int, True, _oneof(4, 8)),
        "group_size": (int, False, None),
        "symmetric": (bool, False, None),
        "corpus": (str, False, _oneof(*CORPORA)),
        "n_samples": (int, False, _positive),
        "seq_len": (int, False, _positive),
    },
    "bnb": {
        "type": (str, True, _oneof("nf4", "fp4", "int8")),
        "double_quant": (bool, False, None),
        "threshold": (float, False, _positive),               # LLM.int8 outlier threshold
        "compute_dtype": (str, False, _oneof("float32", "bfloat16", "float16")),
    },
    "torchao": {
        "type": (str, True, _oneof("int8_weight_only", "int4_weight_only")),
        "group_size": (int, False, _positive),
    },
    "quanto": {"weights": (str, True, _oneof("int8", "int4", "int2"))},
    # An existing GGUF (a community quant): a local file, or a file of a hub repo (downloaded with
    # huggingface_hub when the quant job runs; never at load). Split files: name the first shard.
    "gguf_file": {
        "path": (str, False, _local_gguf),
        "repo": (str, False, _hub_id),
        "file": (str, False, _gguf_name),
        "revision": (str, False, None),                       # hub branch, tag or commit
        "sha256": (str, False, _sha256),                      # expected sha256 (manifest's, see gguf_file)
        "type": (str, False, None),                           # label; default: from the file name
    },
    "hqq": {
        "nbits": (int, True, _oneof(1, 2, 3, 4, 8)),
        "group_size": (int, False, _positive),
        "axis": (int, False, _oneof(0, 1)),
    },
}


@dataclass(frozen=True)
class ReferenceCfg:
    model: str  # embedded:<name> | local path (HF dir or .gguf) | hub id org/name
    dtype: str = "float32"  # float32 | bfloat16: dtype of the exported HF reference
    revision: str = ""  # hub revision for real runs (empty: default branch)
    # KV cache of the reference on llama.cpp: f16 (the engine's default; the shipped default-profile
    # results) | f32 (a float reference that is float: issue 19). Quants always keep the default.
    kv_cache: str = "f16"


@dataclass(frozen=True)
class QuantCfg:
    id: str
    method: str
    params: Mapping[str, Any]

    def recipe(self) -> dict:
        return {"method": self.method, **dict(self.params)}


@dataclass(frozen=True)
class ZoneCfg:
    definition: str = "relative"  # relative | absolute | kld_quantile | bpw
    threshold: float = 0.02  # pre-specified: relative composite degradation <= 2%
    sweep: tuple[float, ...] = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.10)
    primary_metric: str = "kld_mean"


@dataclass(frozen=True)
class ProfileCfg:
    quants: tuple[str, ...] = ()  # empty: every quant of the study
    tasks: tuple[str, ...] = ()  # empty: every task
    corpora: tuple[str, ...] = ()  # empty: every corpus
    contexts: tuple[int, ...] = ()  # empty: every context length
    n_items: int = 200  # items per task
    corpus_tokens: int = 16384  # tokens per calibration corpus
    calib_samples: int = 64  # calibration samples for GPTQ/AWQ/imatrix
    bootstrap: int = 10000  # bootstrap resamples
    holdout_splits: int = 200  # hold-out zone splits
    reference_kv_cache: str = ""  # the reference's KV cache in this profile (empty: reference.kv_cache)
    # items per task held back for the task-selection rule (bench.selection), drawn as
    # selection_sample says, scored by the reference alone, never part of the study's items
    selection_items: int = 0
    # which items are held back: "last" (the last selection_items of the source order: the first
    # rule) or "random" (a sample seeded by seeds.global; Task.held_back_items)
    selection_sample: str = "last"
    # shared-context multiple choice batched (one KV stream per choice, all continuations in one
    # decode; bench/mc.py): 3.1-3.7x the items per second on CPU and the F32 reference's bits, but a
    # quant's logits move ~1e-3 nats with the batch shape, so the shipped default results keep the
    # sequential way; a profile without shipped results (power) turns it on here
    mc_batched: bool = False


@dataclass(frozen=True)
class LiveCodeBenchCfg:
    file: str = ""  # released code_generation_lite JSONL (absolute, ~, or relative to the repo)
    start: str = ""  # contest_date window start YYYY-MM-DD (inclusive; empty: open)
    end: str = ""  # contest_date window end YYYY-MM-DD (inclusive; empty: open)


@dataclass(frozen=True)
class FidelityCfg:
    # opt-in fidelity variants beyond the default metric set (silentzone.fidelity.score.METRICS)
    divergent_tokens: int = 0  # Divergent Token Metrics fdt_mean, sdt_share: greedy continuation length (0: off)


@dataclass(frozen=True)
class SeedsCfg:
    global_: int = 0
    bootstrap: int = 0
    holdout: int = 0


@dataclass(frozen=True)
class Study:
    study: str
    description: str
    reference: ReferenceCfg
    quants: tuple[QuantCfg, ...]
    corpora: tuple[str, ...]
    contexts: tuple[int, ...]
    tasks: tuple[str, ...]
    zone: ZoneCfg = ZoneCfg()
    seeds: SeedsCfg = SeedsCfg()
    livecodebench: LiveCodeBenchCfg = LiveCodeBenchCfg()
    fidelity: FidelityCfg = FidelityCfg()
    profiles: Mapping[str, ProfileCfg] = field(default_factory=dict)
    # Filled by load():
    profile_name: str = "default"
    profile: ProfileCfg = ProfileCfg()
    source: str = ""
    config_hash: str = ""

    @property
    def held_seed(self) -> int | None:
        """The seed of the held-back sample (profile.selection_sample "random": seeds.global), or
        None: the last items of the source order (Task.held_back_items)."""
        return self.seeds.global_ if self.profile.selection_sample == "random" else None

    @property
    def kv_cache(self) -> str:
        """The reference's llama.cpp KV cache type in this profile ("f16" or "f32")."""
        return self.profile.reference_kv_cache or self.reference.kv_cache

    def quant(self, quant_id: str) -> QuantCfg:
        for q in self.quants:
            if q.id == quant_id:
                return q
        raise KeyError(f"{self.source}: no quant {quant_id!r} in study {self.study!r}")


_ALIASES = {"global": "global_"}


def _type_ok(value, tp) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls, data, where: str, src: str):
    """Build frozen dataclass `cls` from a YAML mapping, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: {where or '<top>'}: must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.name not in ("profile_name", "profile", "source",
                                                           "config_hash")}
    kwargs = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        path = f"{where}.{key}" if where else str(key)
        if name not in names:
            shown = sorted(k.rstrip("_") for k in names)
            raise ConfigError(f"{src}: {path}: unknown key (expected one of {shown})")
        kwargs[name] = _convert(value, hints[name], path, src)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        m = re.search(r"argument[s]?: (.*)", str(e))
        raise ConfigError(f"{src}: {where or '<top>'}: missing key {m.group(1) if m else e}") from None


def _convert(value, tp, path, src):
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {path}: must be a list, got {type(value).__name__}")
        return tuple(_convert(v, inner, f"{path}[{i}]", src) for i, v in enumerate(value))
    if tp in (str, int, float, bool):
        if not _type_ok(value, tp):
            raise ConfigError(f"{src}: {path}: must be {tp.__name__}, got {type(value).__name__} "
                              f"{value!r}")
        return float(value) if tp is float else value
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, path, src)
    return value  # Mapping etc.: handled by the caller


def _quant(entry, i, src) -> QuantCfg:
    where = f"quants[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{src}: {where}: must be a mapping with id and method")
    entry = dict(entry)
    qid, method = entry.pop("id", None), entry.pop("method", None)
    if not isinstance(qid, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", qid):
        raise ConfigError(f"{src}: {where}.id: must be a name of letters, digits, _.+-, got {qid!r}")
    where = f"quants[{qid}]"
    if method not in METHODS:
        raise ConfigError(f"{src}: {where}.method: unknown quant method {method!r} "
                          f"(expected one of {sorted(METHODS)})")
    spec = METHODS[method]
    for k, v in entry.items():
        if k not in spec:
            raise ConfigError(f"{src}: {where}.{k}: unknown parameter for method {method} "
                              f"(expected one of {sorted(spec)})")
        tp, _, check = spec[k]
        if not _type_ok(v, tp):
            raise ConfigError(f"{src}: {where}.{k}: must be {tp.__name__}, got {v!r}")
        verdict = check(v) if check else True
        if verdict is not True:
            raise ConfigError(f"{src}: {where}.{k}: {verdict}")
    for k, (_, required, _) in spec.items():
        if required and k not in entry:
            raise ConfigError(f"{src}: {where}: missing parameter {k!r} for method {method}")
    if method == "gguf_file":
        has = {k for k in ("path", "repo", "file") if k in entry}
        if has not in ({"path"}, {"repo", "file"}):
            raise ConfigError(f"{src}: {where}: method gguf_file takes either path, or repo and file "
                              f"(got {sorted(has) or 'neither'})")
        if "path" in entry and "revision" in entry:
            raise ConfigError(f"{src}: {where}.revision: only for a hub file (repo and file)")
    return QuantCfg(qid, method, types.MappingProxyType(dict(sorted(entry.items()))))


def check_model_spec(spec: str, where: str, src: str) -> None:
    """embedded:<name> must be known; a local path must exist; otherwise it must look like org/name."""
    if spec.startswith("embedded:"):
        if spec.split(":", 1)[1] not in EMBEDDED_MODELS:
            raise ConfigError(f"{src}: {where}: unknown embedded model {spec!r} "
                              f"(expected one of {['embedded:' + m for m in EMBEDDED_MODELS]})")
    elif spec.startswith(("/", ".", "~")) or spec.endswith(".gguf"):
        if not Path(spec).expanduser().exists():
            raise ConfigError(f"{src}: {where}: model file or directory not found: {spec}")
    elif not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise ConfigError(f"{src}: {where}: not an embedded model, existing path or hub id: {spec!r}")


def _check_subset(values, allowed, key, src):
    for v in values:
        if v not in allowed:
            raise ConfigError(f"{src}: {key}: unknown value {v!r} (expected one of {list(allowed)})")


SELECTION_SAMPLES = ("last", "random")  # profiles.<p>.selection_sample values
KV_CACHES = tuple(KV_CACHE_TYPES)  # reference.kv_cache values: the types llama.cpp is opened with
PROFILE_SIZES = ("n_items", "corpus_tokens", "calib_samples", "bootstrap", "holdout_splits")


def _zone_value(t: float, definition: str):
    """True, or what is wrong with zone threshold `t` under `definition` (see analysis.cohort)."""
    if not math.isfinite(t):
        return f"must be a finite number, got {t!r}"
    if definition == "kld_quantile":
        return 0 < t <= 1 or f"must be in (0, 1] for definition kld_quantile (a quantile), got {t!r}"
    return t > 0 or f"must be > 0 for definition {definition}, got {t!r}"


def divergent_length(n: int, ctx: int):
    """True, or what is wrong with the Divergent Token continuation length `n` for windows of `ctx`
    tokens: the prompts keep at least half a window of context (fidelity.divergent)."""
    if n <= 0:
        return f"must be > 0 tokens, got {n!r}"
    if n > ctx - ctx // 2:
        return f"must be at most half of every context length (ctx {ctx} allows {ctx - ctx // 2}), got {n!r}"
    return True


def _check_fidelity(study: Study, profiles: Mapping[str, ProfileCfg], given: dict, src: str) -> None:
    """The opt-in fidelity variants, when the file names them (an explicit 0 is refused, not read
    as off: leaving the key out is off)."""
    if "divergent_tokens" in given:
        n = study.fidelity.divergent_tokens
        for c in sorted({*study.contexts, *(c for p in profiles.values() for c in p.contexts)}) or [1 << 30]:
            verdict = divergent_length(n, c)
            if verdict is not True:
                raise ConfigError(f"{src}: fidelity.divergent_tokens: {verdict}")


def _check_ranges(study: Study, profiles: Mapping[str, ProfileCfg], src: str) -> None:
    """Values of the right type but out of range: thresholds, sizes, counts, context lengths, seeds."""
    z = study.zone
    values = [("zone.threshold", z.threshold)] + [(f"zone.sweep[{i}]", t) for i, t in enumerate(z.sweep)]
    for where, t in values:
        verdict = _zone_value(t, z.definition)
        if verdict is not True:
            raise ConfigError(f"{src}: {where}: {verdict}")
    for i, c in enumerate(study.contexts):
        if c <= 0:
            raise ConfigError(f"{src}: contexts[{i}]: must be > 0 tokens, got {c!r}")
    for key, v in vars(study.seeds).items():
        if v < 0:
            raise ConfigError(f"{src}: seeds.{key.rstrip('_')}: must be >= 0, got {v!r}")
    for name, prof in profiles.items():
        for key in PROFILE_SIZES:
            v = getattr(prof, key)
            if v <= 0:
                raise ConfigError(f"{src}: profiles.{name}.{key}: must be > 0, got {v!r}")
        for i, c in enumerate(prof.contexts):
            if c <= 0:
                raise ConfigError(f"{src}: profiles.{name}.contexts[{i}]: must be > 0 tokens, got {c!r}")


def load(path: str | Path, profile: str = "default") -> Study:
    """Load and validate configs/<study>.yaml, apply `profile`; raise ConfigError (one line)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ConfigError(f"{src}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(f"{src}: {at}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: <top>: must be a mapping")
    raw = dict(raw)
    quants_raw = raw.pop("quants", None)
    profiles_raw = raw.pop("profiles", {}) or {}
    if not isinstance(quants_raw, list) or not quants_raw:
        raise ConfigError(f"{src}: quants: must be a non-empty list")
    quants = tuple(_quant(q, i, src) for i, q in enumerate(quants_raw))
    ids = [q.id for q in quants]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{src}: quants: duplicate id(s) {dup}")
    if not isinstance(profiles_raw, dict):
        raise ConfigError(f"{src}: profiles: must be a mapping of profile name to settings")
    profiles = {name: _build(ProfileCfg, p or {}, f"profiles.{name}", src)
                for name, p in profiles_raw.items()}
    study = _build(Study, {**raw, "quants": [], "profiles": {}}, "", src)
    study = replace(study, quants=quants, profiles=types.MappingProxyType(profiles))
    check_model_spec(study.reference.model, "reference.model", src)
    _check_subset(study.corpora, CORPORA, "corpora", src)
    _check_subset(study.tasks, TASKS, "tasks", src)
    if study.zone.definition not in ZONE_DEFINITIONS:
        raise ConfigError(f"{src}: zone.definition: must be one of {list(ZONE_DEFINITIONS)}")
    _check_ranges(study, profiles, src)
    _check_fidelity(study, profiles, raw.get("fidelity") or {}, src)
    lcb = study.livecodebench
    for key in ("start", "end"):
        v = getattr(lcb, key)
        if v and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            raise ConfigError(f"{src}: livecodebench.{key}: must be a date YYYY-MM-DD, got {v!r}")
    if lcb.start and lcb.end and lcb.start > lcb.end:
        raise ConfigError(f"{src}: livecodebench: start {lcb.start} is after end {lcb.end}")
    if "livecodebench" in study.tasks and not lcb.file.endswith((".jsonl", ".jsonl.gz")):
        raise ConfigError(f"{src}: livecodebench.file: tasks include livecodebench, so a release "
                          f"file (.jsonl) is needed, got {lcb.file!r}")
    # the file's existence is checked when the task loads (a dry run validates offline)
    if study.reference.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"{src}: reference.dtype: must be float32 or bfloat16")
    if study.reference.kv_cache not in KV_CACHES:
        raise ConfigError(f"{src}: reference.kv_cache: must be one of {list(KV_CACHES)}, "
                          f"got {study.reference.kv_cache!r}")
    for name, prof in profiles.items():
        if prof.reference_kv_cache not in ("", *KV_CACHES):
            raise ConfigError(f"{src}: profiles.{name}.reference_kv_cache: must be one of "
                              f"{list(KV_CACHES)}, got {prof.reference_kv_cache!r}")
        if prof.selection_sample not in SELECTION_SAMPLES:
            raise ConfigError(f"{src}: profiles.{name}.selection_sample: must be one of "
                              f"{list(SELECTION_SAMPLES)}, got {prof.selection_sample!r}")
        if prof.selection_items < 0:
            raise ConfigError(f"{src}: profiles.{name}.selection_items: must be >= 0, "
                              f"got {prof.selection_items!r}")
    if profile not in profiles:
        raise ConfigError(f"{src}: profiles: no profile {profile!r} (have {sorted(profiles)})")
    prof = profiles[profile]
    for key, sub, full in (("quants", prof.quants, ids), ("tasks", prof.tasks, study.tasks),
                           ("corpora", prof.corpora, study.corpora),
                           ("contexts", prof.contexts, study.contexts)):
        _check_subset(sub, full, f"profiles.{profile}.{key}", src)
    study = replace(
        study,
        quants=tuple(q for q in quants if not prof.quants or q.id in prof.quants),
        tasks=prof.tasks or study.tasks,
        corpora=prof.corpora or study.corpora,
        contexts=prof.contexts or study.contexts,
        profile_name=profile, profile=prof, source=src,
    )
    return replace(study, config_hash=hash_obj(as_dict(study)))


def as_dict(study: Study) -> dict:
    """The resolved study as plain data (what config_hash hashes)."""
    # keys added after results were shipped enter the hash only when set away from their default,
    # so that the hashes of studies without them stay as they were
    reference = {k: v for k, v in vars(study.reference).items() if not (k == "kv_cache" and v == "f16")}
    profile = {k: v for k, v in vars(study.profile).items()
               if not (k in ("reference_kv_cache", "selection_items", "mc_batched") and not v)
               and not (k == "selection_sample" and v == "last")}
    return {
        "study": study.study, "reference": reference,
        "quants": [{"id": q.id, **q.recipe()} for q in study.quants],
        "corpora": list(study.corpora), "contexts": list(study.contexts), "tasks": list(study.tasks),
        "zone": vars(study.zone), "seeds": vars(study.seeds), "profile": study.profile_name,
        "profile_settings": profile,
        # only when set, so that the hashes of studies without it stay as they were
        **({"livecodebench": vars(study.livecodebench)}
           if study.livecodebench != LiveCodeBenchCfg() else {}),
        **({"fidelity": vars(study.fidelity)} if study.fidelity != FidelityCfg() else {}),
    }


def livecodebench_file(study: Study) -> Path:
    """The study's LiveCodeBench release file (relative paths are relative to the repository)."""
    from .paths import REPO
    p = Path(study.livecodebench.file).expanduser()
    return p if p.is_absolute() else REPO / p


def load_study(name_or_path: str | Path, profile: str = "default") -> Study:
    """A study by name (configs/<name>.yaml) or by the path of its YAML file, with `profile` applied:
    load_study("smollm2", "smoke") == load(paths.CONFIGS / "smollm2.yaml", "smoke")."""
    from .paths import CONFIGS
    text = str(name_or_path)
    is_path = Path(text).is_file() or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    return load(Path(text) if is_path else CONFIGS / f"{text}.yaml", profile)
