"""Result contracts: the tidy tables that pass between pipeline stages and `analysis`.

This module is the seam between the pipeline (`silentzone`, which writes these tables) and the
statistics (`analysis`, which reads them). It depends on pandas alone. Every writer calls
`validate(frame, SCHEMA)` before saving; every reader may call it after loading. Columns are
listed with their dtype kind and unit; extra columns are allowed (kept, not checked) so that
stages can add detail without breaking readers.

dtype kinds: "str", "int", "float", "bool". A float column may hold NaN where the doc says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str" | "int" | "float" | "bool"
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Schema:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # columns that identify a row uniquely

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def markdown(self) -> str:
        """The schema as a Markdown table (used by the README and `silentzone schema`)."""
        rows = [f"**{self.name}** ({self.doc}; key: {', '.join(self.key)})", "",
                "| column | type | meaning |", "|---|---|---|"]
        rows += [f"| `{c.name}` | {c.kind}{'?' if c.nullable else ''} | {c.doc.replace('|', '/')} |"
                 for c in self.columns]
        return "\n".join(rows)


QUANTS = Schema(
    "quants",
    "one row per quant of a study: the cohort manifest",
    (
        Column("study", "str", "study name from the config"),
        Column("quant_id", "str", "quant id from the config, unique within the study"),
        Column("method", "str", "gguf | gptq | awq | bnb | torchao | quanto | hqq | reference"),
        Column("recipe", "str", "every recipe parameter, canonical JSON"),
        Column("recipe_hash", "str", "sha256[:16] of recipe JSON plus reference and tool versions"),
        Column("requested_type", "str", "the type asked for, e.g. Q4_K_M, w4g64, nf4"),
        Column("tensor_types", "str", "JSON histogram {type: n_tensors} read back from the artifact"),
        Column("bpw", "float", "effective bits per weight of the quantized tensors", nullable=True),
        Column("bytes", "int", "artifact size on disk in bytes (0 for load-time quants)"),
        Column("sha256", "str", "sha256 of the artifact (of the recipe for load-time quants)"),
        Column("tool_versions", "str", "JSON {package: version}"),
        Column("wall_s", "float", "wall time to produce the artifact, seconds", nullable=True),
        Column("status", "str", "ok | failed"),
        Column("reason", "str", "why it failed; empty when ok"),
    ),
    ("study", "quant_id"),
)

FIDELITY = Schema(
    "fidelity",
    "long table of fidelity metrics: quant x corpus x context x metric",
    (
        Column("study", "str", "study name"),
        Column("quant_id", "str", "quant id"),
        Column("corpus", "str", "calibration corpus id, e.g. wiki, c4, code, shakespeare"),
        Column("ctx", "int", "context length of the scoring windows, tokens"),
        Column("metric", "str", "metric name, e.g. kld_mean, kld_p99, top1_agreement, ppl_ratio"),
        Column("value", "float", "metric value (nats for KLD/JS, fraction for agreement)", nullable=True),
        Column("n_tokens", "int", "number of scored tokens"),
        Column("tokens_hash", "str", "sha256[:16] of the scored token ids (joins refuse mismatches)"),
    ),
    ("study", "quant_id", "corpus", "ctx", "metric"),
)

SAMPLES = Schema(
    "samples",
    "per-prompt benchmark results for the reference and every quant",
    (
        Column("study", "str", "study name"),
        Column("model", "str", "'reference' or a quant id"),
        Column("task", "str", "task name, e.g. sciq, arc_easy, piqa, lambada, hellaswag"),
        Column("item_id", "str", "item id within the task"),
        Column("item_hash", "str", "sha256[:16] of the item content"),
        Column("prompt_hash", "str", "sha256[:16] of the prompt token ids"),
        Column("correct", "bool", "the model answered the item correctly"),
        Column("margin", "float", "gold minus best wrong log-likelihood (nats); NaN for generation",
               nullable=True),
        Column("kld_mean", "float", "mean per-token KLD(reference || model) over the item, nats; "
               "0 for the reference", nullable=True),
        Column("kld_max", "float", "max per-token KLD over the item, nats", nullable=True),
    ),
    ("study", "model", "task", "item_id"),
)

SCHEMAS = {s.name: s for s in (QUANTS, FIDELITY, SAMPLES)}

# Headline numbers file data/<study>/stats.json: a flat JSON object. Required keys:
STATS_KEYS = {
    "study": "study name",
    "label": "e.g. 'small-model replication (SmolLM2-135M-Instruct)'",
    "n_quants": "quants with status ok",
    "zone_definition": "silent-zone rule, e.g. 'relative composite degradation <= 2%'",
    "n_zone": "quants in the silent zone",
    "rho_full": "Spearman rho(KLD mean, composite score), full cohort",
    "p_full": "its p-value",
    "rho_zone": "same inside the silent zone",
    "p_zone": "its p-value",
    "rho_vol_zone": "Spearman rho(KLD mean, disagreement volume) in the zone",
    "identical_quants": "groups of quant ids that are one model ('A = B': same artifact sha256, or every fidelity value and per-item answer and margin equal)",
    "rho_full_distinct": "rho_full with each such model counted once (n_distinct quants; p_full_distinct)",
    "rho_zone_distinct": "rho_zone likewise (n_zone_distinct quants of the same zone; p_zone_distinct)",
    "provenance": "provenance record (config hash, versions, commit, seeds, host)",
}

_KIND_CHECK = {
    "str": pd.api.types.is_string_dtype,
    "int": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_float_dtype,
    "bool": pd.api.types.is_bool_dtype,
}


class ContractError(ValueError):
    """A frame does not match its result contract."""


def validate(frame: pd.DataFrame, schema: Schema, where: str = "") -> pd.DataFrame:
    """Check `frame` against `schema`; return it unchanged or raise ContractError (one line).

    Checks: every column present, dtype kind, no nulls in non-nullable columns, key unique.
    `where` (a file name) is prefixed to the message.
    """
    pre = f"{where}: " if where else ""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise ContractError(f"{pre}{schema.name} table lacks column(s) {missing}")
    for c in schema.columns:
        s = frame[c.name]
        if len(s) and s.isna().all() and c.nullable:
            continue
        if c.kind == "str" and s.dtype == object and s.map(lambda v: isinstance(v, str)).all():
            pass
        elif not _KIND_CHECK[c.kind](s.dtype):
            raise ContractError(f"{pre}{schema.name}.{c.name} must be {c.kind}, got {s.dtype}")
        if not c.nullable and s.isna().any():
            raise ContractError(f"{pre}{schema.name}.{c.name} has {int(s.isna().sum())} null value(s)")
    dup = frame.duplicated(list(schema.key))
    if dup.any():
        first = frame.loc[dup, list(schema.key)].iloc[0].to_dict()
        raise ContractError(f"{pre}{schema.name} key {schema.key} not unique, e.g. {first}")
    return frame
