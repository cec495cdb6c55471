"""Process-wide native-library setup that must happen before llama.cpp's libraries are loaded.

llama.cpp built by a toolchain that links libstdc++ statically (the lent GPU machines' image: none
of libggml-base, libggml-cuda, libllama NEEDs libstdc++.so.6, and each exports its own copy of
it, libggml-cuda 3,464 std:: symbols) crashes in a process that also holds torch (which uses the
shared libstdc++.so.6): the copies share the GNU-unique facet ids (std::locale::id, STB_GNU_UNIQUE)
but each numbers them with its own counter, so llama_model::print_info's `std::ostream << long`
(std::ostream::_M_insert<long>, bound to libggml-cuda's copy) fetches the wrong facet and jumps to
garbage (SIGSEGV in llama_model_load_from_file; with llama.cpp loaded first, torch's import crashes
the same way). bench/gpu/llama_cuda_diag.sh and bench/RESULTS.md "GPU" hold the diagnosis.

Loading the shared libstdc++ into the global symbol scope first makes every std:: symbol of the
llama.cpp libraries loaded afterwards bind to it (global scope is searched before a dlopen'ed
library's own dependencies), so one libstdc++ serves the whole process. Harmless where llama.cpp
links libstdc++.so.6 as usual (the same library, already loaded). SILENTZONE_NO_GLOBAL_LIBSTDCXX=1
turns it off.
"""

from __future__ import annotations

import os
import sys

from .settings import current

GLOBAL_LIBSTDCXX: str | None = None


def global_libstdcxx() -> str | None:
    """dlopen libstdc++.so.6 with RTLD_GLOBAL (promoting it if already loaded); its path, or None."""
    global GLOBAL_LIBSTDCXX
    if GLOBAL_LIBSTDCXX or not sys.platform.startswith("linux") or current().no_global_libstdcxx:
        return GLOBAL_LIBSTDCXX
    import ctypes
    try:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL)
    except OSError:
        return None
    GLOBAL_LIBSTDCXX = "libstdc++.so.6"
    if "llama_cpp" in sys.modules:  # too late for libraries already bound
        import warnings
        warnings.warn("llama_cpp was imported before silentzone: a llama.cpp built with a static "
                      "libstdc++ may crash next to torch (see silentzone/_native.py)", stacklevel=2)
    return GLOBAL_LIBSTDCXX
