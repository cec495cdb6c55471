"""What a quant method may fail with, as opposed to a bug.

A quant that cannot be made is a row of the cohort with status "failed" and the reason; the cohort
goes on. Only these are such failures (`make_quant` catches exactly TOOL_FAILURES):

    QuantFailed        raised by our own wrappers: a tool wrote nothing, the artifact's check found
                       logits that are not finite or of the wrong shape, a file's sha256 differs
    RuntimeError       a llama.cpp tool exited non-zero (llama_tools.run), a quantization library
                       refused the model (unsupported shape or type, NotImplementedError), torch ran
                       out of GPU memory (torch.OutOfMemoryError); GGUFFileError (an existing GGUF
                       cannot be found or downloaded) is a QuantFailed
    ValueError         a quantization library refused the recipe or the weights (LoadtimeError too)
    AssertionError     an assertion inside a quantization library
    MemoryError        out of host memory while quantizing
Anything else (TypeError, NameError, AttributeError, ImportError, KeyError, IndexError, OSError, ...)
is a bug in our code or a broken environment: it propagates with its traceback and no row is written.
"""

from __future__ import annotations

from ..errors import SilentzoneError


class QuantFailed(SilentzoneError, RuntimeError):
    """This quant cannot be made by its tool; the message (one line) says why."""


LIBRARY_FAILURES = (RuntimeError, ValueError, AssertionError, MemoryError)
TOOL_FAILURES = (QuantFailed, *LIBRARY_FAILURES)
