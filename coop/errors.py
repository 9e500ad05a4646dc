"""The root of coop's exceptions, in a module of its own so that every layer can raise it
without importing any other: the CLI prints a CoopError as one line, with no traceback.

Specific errors live next to the code that raises them (`JournalError` in journal.py,
`LLMFatalError` in llm.py, `BoardUnavailable` in the board client…), all subclasses of this.
"""

from __future__ import annotations


class CoopError(Exception):
    """A failure the user can act on: the CLI prints it as one line, with no traceback."""
