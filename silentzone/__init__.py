"""silentzone: rerun "Displacement Is Not Direction" (KLD vs benchmark score of quantized LLMs).

Pipeline modules: config (study YAML), models (reference registry), llama_tools (llama.cpp
command-line tools), tables (result contracts I/O), provenance, cli.
The statistics live in the separate, torch-free package `analysis`.
"""

__version__ = "0.1.0"

from ._native import global_libstdcxx as _global_libstdcxx

_global_libstdcxx()  # before any llama.cpp library is loaded: see silentzone/_native.py
