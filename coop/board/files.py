"""The objective's shared workspace: files every worker on every node reads and writes, kept on
the board with the journal (so they survive a restart like everything else) and exported as a
folder beside the report when the run ends.

Its invariants: a path is a plain relative path (no `..`, no absolute path, a bounded depth and
length, ordinary characters — no control or format character, which would fake a line in a
listing or hide what a name says); a name is a file or a folder, never both (the export makes
a folder of it); no file or the whole workspace grows past its bound; a write is applied once
per idempotency key, so a task redone after a crash does not write again. A journal from
before these checks may hold names that break them: it is replayed as it is, and the export
says what it could not write.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FILE_BYTES = 256 * 1024
"""Most one file may hold (UTF-8)."""
MAX_TOTAL_BYTES = 16 * 1024 * 1024
"""Most the whole workspace may hold: it lives in the board actor's memory and the journal."""
MAX_FILES = 1000
"""Most files the workspace may hold."""
MAX_PATH_CHARS = 200
"""Longest path, in characters."""
MAX_DEPTH = 8
"""Most parts a path may have (`a/b/c` has 3)."""
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")
"""One part of a path, matched whole (`fullmatch`: `$` alone would let a trailing newline by)."""


class BadPath(ValueError):
    """A path the workspace does not accept (the message says why, for the model)."""


def clean(path: str) -> str:
    """`path` as the workspace stores it (`./a//b` is `a/b`), or BadPath."""
    odd = next((c for c in path if unicodedata.category(c) in ("Cc", "Cf")), None)
    if odd is not None:
        raise BadPath(f"a path has no control or format characters (it holds {odd!r})")
    raw = path.strip().replace("\\", "/")
    if raw.startswith("/"):
        raise BadPath("paths are relative to the workspace: no leading /")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or len(raw) > MAX_PATH_CHARS:
        raise BadPath(f"a path is 1 to {MAX_PATH_CHARS} characters, relative, like notes/a.md")
    if len(parts) > MAX_DEPTH or not all(_PART.fullmatch(p) for p in parts):
        raise BadPath(
            "each part of a path is letters, digits, '.', '_', '-' or spaces, starting with "
            f"a letter or digit, at most {MAX_DEPTH} parts deep (no '..')"
        )
    return "/".join(parts)


class Files:
    def __init__(self) -> None:
        self._files: dict[str, str] = {}
        self._sizes: dict[str, int] = {}  # path -> its UTF-8 bytes, counted once per write
        self._keys: dict[str, str] = {}  # idempotency key -> the path it wrote
        self._folders: dict[str, str] = {}  # folder -> a file it holds
        self._total = 0

    def check(self, path: str, content: str) -> None:
        """Raise BadPath if writing `content` at `path` (already clean) would break a bound."""
        size = len(content.encode("utf-8"))
        if size > MAX_FILE_BYTES:
            raise BadPath(f"{size:,} bytes is more than a file may hold ({MAX_FILE_BYTES:,})")
        if self._total - self._sizes.get(path, 0) + size > MAX_TOTAL_BYTES:
            raise BadPath(f"the workspace is full ({MAX_TOTAL_BYTES:,} bytes)")
        if path not in self._files and len(self._files) >= MAX_FILES:
            raise BadPath(f"the workspace holds its most files ({MAX_FILES})")
        if path in self._folders:
            raise BadPath(f"{path} is a folder (it holds {self._folders[path]}), not a file")
        for folder in _folders(path):
            if folder in self._files:
                raise BadPath(f"{folder} is a file, so it cannot hold {path}")

    def seen(self, key: str) -> str | None:
        """The path a write under `key` already made, if any."""
        return self._keys.get(key)

    def write(self, path: str, content: str, key: str) -> None:
        """Apply a write (already checked and journaled)."""
        size = len(content.encode("utf-8"))
        self._total += size - self._sizes.get(path, 0)
        self._files[path], self._sizes[path] = content, size
        for folder in _folders(path):
            self._folders.setdefault(folder, path)
        if key:
            self._keys[key] = path

    def size(self, path: str) -> int:
        return self._sizes.get(path, 0)

    def read(self, path: str) -> str | None:
        return self._files.get(path)

    def listing(self) -> list[tuple[str, int]]:
        return sorted(self._sizes.items())


def _folders(path: str) -> list[str]:
    """The folders `path` sits in: `a/b/c` is in `a` and `a/b`."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
