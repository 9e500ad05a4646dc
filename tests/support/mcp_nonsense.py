"""A broken MCP server over stdio: it writes lines that are not JSON-RPC where the protocol
belongs, then exits (`garbage`) or never answers (`babble`).

Run as a script, `python mcp_nonsense.py MODE`, by the tests' interpreter. It imports nothing
but the standard library, so that it speaks at once even on a loaded machine: what a client
must quote in its one line is on the wire long before any timeout of the tests (the MCP SDK
alone takes seconds to import under load).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()
"""This file: what a test's config runs, by path."""
NONSENSE = b"Welcome to a server that talks nonsense!\n"
"""What it writes where JSON-RPC belongs."""


def main(mode: str) -> None:
    os.write(1, NONSENSE * 3)
    if mode == "babble":
        sys.stdin.read()  # never answers; leaves when the client closes stdin


if __name__ == "__main__":
    main(sys.argv[1])
