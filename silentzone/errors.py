"""One base for every error the package raises about its input or its tools.

    SilentzoneError        bad input or a tool that cannot do what was asked: the CLI prints one line
                           (the message names the file, key or item and what is wrong) and exits 2
Anything else that escapes is a bug and keeps its traceback. Each room subclasses the base with its
own name (ConfigError, ModelError, BackendError, ...), so callers can catch narrowly or broadly.
`analysis` is a pure library and imports nothing of silentzone: its ContractError is the one error of
the package that does not derive from this base; the CLI treats it as a user error too.
"""

from __future__ import annotations


class SilentzoneError(Exception):
    """An error about the user's input or a tool's failure, with a one-line message."""
